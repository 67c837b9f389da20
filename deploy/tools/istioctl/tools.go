//go:build tools

// Package tools pins istioctl for `make test-deploy`.
package tools

import _ "istio.io/istio/istioctl/cmd/istioctl"

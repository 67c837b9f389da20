//go:build tools

// Package tools pins egctl for `make test-deploy`.
package tools

import _ "github.com/envoyproxy/gateway/cmd/egctl"

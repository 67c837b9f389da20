//go:build tools

// Package tools pins helm for `make test-deploy`; its module keeps helm's
// dependencies out of the firewall's own go.mod.
package tools

import _ "helm.sh/helm/v3/cmd/helm"

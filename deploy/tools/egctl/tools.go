//go:build tools

// Package tools pins Envoy Gateway for `make test-deploy`: egctl (its
// translation, checked in Envoy) and the envoy-gateway controller itself,
// run in its standalone mode (file provider, host infrastructure).
package tools

import (
	_ "github.com/envoyproxy/gateway/cmd/egctl"
	_ "github.com/envoyproxy/gateway/cmd/envoy-gateway"
)

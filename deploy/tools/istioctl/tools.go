//go:build tools

// Package tools pins Istio for `make test-deploy`: istioctl, and istiod
// (pilot-discovery) with its node agent (pilot-agent), which the deploy
// tests run against their kube-apiserver.
package tools

import (
	_ "istio.io/istio/istioctl/cmd/istioctl"
	_ "istio.io/istio/pilot/cmd/pilot-agent"
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
)

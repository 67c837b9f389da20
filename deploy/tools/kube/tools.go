//go:build tools

// Package tools pins the Kubernetes programs `make test-deploy` runs: the
// control plane the manifests are checked against, and the node (kubelet,
// kube-proxy) of the live single-node cluster, all from one release.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)

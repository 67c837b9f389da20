#!/usr/bin/env bash
# Builds the pinned deployment tools into .tools/bin, each only when it is
# missing: helm, etcd, egctl, envoy-gateway, istioctl, pilot-discovery, promtool,
# pilot-agent, CoreDNS and Kubernetes
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy), from the modules under deploy/tools (versions in their
# go.mod). All of them from cold Go caches on a 2-core machine: about 13-14
# minutes (they share most packages; a cold CI run took 28 min 20 s, of
# which its tests about 14); with a warm Go build cache, seconds each.
#
# Built tools are kept outside the clone too, in AIFIREWALL_TOOLS_CACHE
# (default ~/.cache/aifirewall-tools), under a key of the tool's module
# (its go.mod and go.sum), the build flags and the Go version: a fresh
# clone on the same machine (CI's) copies them instead of building again,
# and a changed pin builds anew.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/.tools/bin"
cache="${AIFIREWALL_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifirewall-tools}"
mkdir -p "$bin" "$cache"
gover="$(go env GOVERSION)"
build() { # name, module dir, package, [ldflags]
  local name=$1 dir=$2 pkg=$3 ldflags=${4:-}
  if [ -x "$bin/$name" ]; then return; fi
  local key
  key="$(cat "deploy/tools/$dir/go.mod" "deploy/tools/$dir/go.sum" | sha256sum | cut -c1-16)-$(printf '%s %s %s' "$pkg" "$ldflags" "$gover" | sha256sum | cut -c1-8)"
  local cached="$cache/$name-$key"
  if [ ! -x "$cached" ]; then
    echo "building $name ($pkg)" >&2
    (cd "deploy/tools/$dir" && go build -trimpath -ldflags "$ldflags" -o "$cached.tmp.$$" "$pkg")
    mv "$cached.tmp.$$" "$cached"
  fi
  cp "$cached" "$bin/$name.tmp"
  mv "$bin/$name.tmp" "$bin/$name"
}
build helm helm helm.sh/helm/v3/cmd/helm
build etcd etcd go.etcd.io/etcd/server/v3
build egctl egctl github.com/envoyproxy/gateway/cmd/egctl
# Envoy Gateway's controller, run standalone by the deploy tests.
build envoy-gateway egctl github.com/envoyproxy/gateway/cmd/envoy-gateway
build istioctl istioctl istio.io/istio/istioctl/cmd/istioctl
# istiod and its node agent, run by the deploy tests.
build pilot-discovery istioctl istio.io/istio/pilot/cmd/pilot-discovery
build pilot-agent istioctl istio.io/istio/pilot/cmd/pilot-agent
# kubectl and clients parse the version: it must be set at build time.
kubever="-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
build kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver "$kubever"
# The live single-node cluster (deploy/cluster): the rest of the control
# plane and the node, from the same module and build cache.
for c in kube-controller-manager kube-scheduler kubelet kube-proxy; do
  build "$c" kube "k8s.io/kubernetes/cmd/$c" "$kubever"
done
build coredns coredns github.com/aifirewall/aifirewall/deploy/tools/coredns
# The chart's alert rules are checked and unit-tested with promtool.
build promtool promtool github.com/prometheus/prometheus/cmd/promtool

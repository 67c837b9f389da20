#!/usr/bin/env bash
# Builds the pinned deployment tools into .tools/bin, each only when it is
# missing: helm, etcd, kube-apiserver, egctl and istioctl, from the modules
# under deploy/tools (versions in their go.mod). Cold on a 2-core machine:
# kube-apiserver ~12 min, egctl ~10, istioctl ~10, helm ~3, etcd ~2; with
# a warm Go build cache, seconds each.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/.tools/bin"
mkdir -p "$bin"
build() { # name, module dir, package, [ldflags]
  local name=$1 dir=$2 pkg=$3 ldflags=${4:-}
  if [ -x "$bin/$name" ]; then return; fi
  echo "building $name ($pkg)" >&2
  (cd "deploy/tools/$dir" && go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
}
build helm helm helm.sh/helm/v3/cmd/helm
build etcd etcd go.etcd.io/etcd/server/v3
build egctl egctl github.com/envoyproxy/gateway/cmd/egctl
build istioctl istioctl istio.io/istio/istioctl/cmd/istioctl
# kubectl and clients parse the version: it must be set at build time.
build kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver \
  "-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"

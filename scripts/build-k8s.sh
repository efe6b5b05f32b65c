#!/usr/bin/env bash
# Builds the Kubernetes node and control-plane binaries the Kubernetes tests
# run (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, kubectl) from the Go module proxy, into a cache outside the
# repository keyed by version. Does nothing when they are already there.
#
#   K8S_VERSION      Kubernetes version (default v1.34.3)
#   COCOON_K8S_BIN   output directory (default
#                    ${XDG_CACHE_HOME:-/var/cache}/cocoon/kubernetes/$K8S_VERSION;
#                    internal/testutil/k8stest looks in the same place)
set -euo pipefail
version=${K8S_VERSION:-v1.34.3}
out=${COCOON_K8S_BIN:-${XDG_CACHE_HOME:-/var/cache}/cocoon/kubernetes/$version}
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

have=1
for c in "${cmds[@]}"; do [ -x "$out/$c" ] || have=0; done
if [ $have = 1 ]; then exit 0; fi

# Staging modules are published as k8s.io/<name> v0.<minor>.<patch>.
staging=${version/#v1./v0.}
minor=$(echo "$version" | cut -d. -f2)
echo "build-k8s: building Kubernetes $version into $out (several minutes)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
{
  echo "module cocoon.local/k8s-bins"
  echo
  echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  # k8s.io/kubernetes replaces every staging module with a directory of its
  # own repository; outside it they come from the proxy at the staging version.
  sed -n 's#^\s*\(k8s\.io/[^ ]*\) => \./staging/src/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
} >"$work/go.mod"
{
  echo "//go:build tools"
  echo
  echo "package tools"
  echo
  echo "import ("
  for c in "${cmds[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
  echo ")"
} >"$work/tools.go"
cd "$work"
GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || GOFLAGS=-mod=mod go mod tidy
mkdir -p "$out.tmp"
CGO_ENABLED=0 go build -trimpath -o "$out.tmp/" -ldflags "-s -w \
  -X k8s.io/component-base/version.gitVersion=$version \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$minor \
  -X k8s.io/component-base/version.gitTreeState=clean" \
  $(printf 'k8s.io/kubernetes/cmd/%s ' "${cmds[@]}")
mkdir -p "$out"
for c in "${cmds[@]}"; do mv "$out.tmp/$c" "$out/$c"; done
rmdir "$out.tmp"
echo "build-k8s: done"

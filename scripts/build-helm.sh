#!/usr/bin/env bash
# Builds helm from the Go module proxy (helm.sh/helm/v3) into a cache outside
# the repository keyed by version, for the Helm chart's tests. Does nothing
# when it is already there.
#
#   HELM_VERSION     helm version (default v3.22.0)
#   COCOON_HELM_BIN  output directory (default
#                    ${XDG_CACHE_HOME:-/var/cache}/cocoon/helm/$HELM_VERSION)
set -euo pipefail
version=${HELM_VERSION:-v3.22.0}
out=${COCOON_HELM_BIN:-${XDG_CACHE_HOME:-/var/cache}/cocoon/helm/$version}
if [ -x "$out/helm" ]; then exit 0; fi
echo "build-helm: building helm $version into $out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init cocoon.local/helm-bin >/dev/null 2>&1
GOFLAGS=-mod=mod go get "helm.sh/helm/v3@$version" >/dev/null 2>&1 || GOFLAGS=-mod=mod go get "helm.sh/helm/v3@$version"
mkdir -p "$out"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$out/helm.tmp" \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" helm.sh/helm/v3/cmd/helm
mv "$out/helm.tmp" "$out/helm"
echo "build-helm: done"

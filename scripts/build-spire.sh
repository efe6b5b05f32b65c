#!/usr/bin/env bash
# Builds spire-server and spire-agent, which the SPIRE node attestor tests
# run, from the Go module proxy into a cache outside the repository keyed by
# version. Does nothing when they are already there.
#
#   SPIRE_VERSION    SPIRE version (default v1.13.3)
#   COCOON_SPIRE_BIN output directory (default
#                    ${XDG_CACHE_HOME:-/var/cache}/cocoon/spire/$SPIRE_VERSION;
#                    the tests look in the same place)
set -euo pipefail
version=${SPIRE_VERSION:-v1.13.3}
out=${COCOON_SPIRE_BIN:-${XDG_CACHE_HOME:-/var/cache}/cocoon/spire/$version}
cmds=(spire-server spire-agent)

have=1
for c in "${cmds[@]}"; do [ -x "$out/$c" ] || have=0; done
if [ $have = 1 ]; then exit 0; fi

echo "build-spire: building SPIRE $version into $out (several minutes)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A module of its own: `go install pkg@version` asks the proxy for the
# module's version list, which it refuses for SPIRE.
goversion=$(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')
printf 'module cocoon.local/spire-bins\n\ngo %s\n\nrequire github.com/spiffe/spire %s\n' "$goversion" "$version" >"$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport (\n%s\n)\n' \
  "$(printf '\t_ "github.com/spiffe/spire/cmd/%s"\n' "${cmds[@]}")" >"$work/tools.go"
cd "$work"
GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || GOFLAGS=-mod=mod go mod tidy
mkdir -p "$out.tmp"
# spire-server's SQLite datastore needs cgo.
CGO_ENABLED=1 go build -trimpath -o "$out.tmp/" -ldflags "-s -w" \
  $(printf 'github.com/spiffe/spire/cmd/%s ' "${cmds[@]}")
mkdir -p "$out"
for c in "${cmds[@]}"; do mv "$out.tmp/$c" "$out/$c"; done
rmdir "$out.tmp"
echo "build-spire: done"

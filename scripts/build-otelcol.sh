#!/usr/bin/env bash
# Builds otelcol-owner (scripts/otelcol: the OpenTelemetry Collector's OTLP
# receiver writing what it receives to a file), the owner's endpoint in the
# telemetry tests, from the Go module proxy into a cache outside the
# repository keyed by its sources. Does nothing when it is already there.
# A module of its own keeps the collector's dependencies out of Cocoon's.
#
#   COCOON_OTELCOL_BIN output directory (default
#                      ${XDG_CACHE_HOME:-/var/cache}/cocoon/otelcol/<key>;
#                      the tests look in the same place)
set -euo pipefail
cd "$(dirname "$0")/otelcol"
key=$(cat go.mod go.sum main.go | sha256sum | cut -c1-12)
out=${COCOON_OTELCOL_BIN:-${XDG_CACHE_HOME:-/var/cache}/cocoon/otelcol/$key}
[ -x "$out/otelcol-owner" ] && exit 0
echo "build-otelcol: building otelcol-owner into $out"
mkdir -p "$out"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/otelcol-owner.tmp" .
mv "$out/otelcol-owner.tmp" "$out/otelcol-owner"

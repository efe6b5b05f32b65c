#!/usr/bin/env bash
# Cocoon demo: a KBS on an embedded store releases a secret to an attested
# (sample) guest, and only once its policies say so.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
work=$(mktemp -d)
port=$(( 20000 + RANDOM % 20000 ))
url=http://127.0.0.1:$port
trap 'kill $kbs_pid 2>/dev/null; wait $kbs_pid 2>/dev/null; rm -rf "$work"' EXIT
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Starting a KBS on $url with an embedded store in $work/data"
cat > "$work/kbs.toml" <<TOML
[http_server]
sockets = ["127.0.0.1:$port"]
insecure_http = true   # demo only: serve TLS with private_key/certificate otherwise

[storage_backend]
storage_type = "Embedded"

[storage_backend.backends.embedded]
path = "$work/data"
TOML
"$BIN/kbs" --config "$work/kbs.toml" 2>"$work/kbs.log" &
kbs_pid=$!
for _ in $(seq 50); do curl -fs "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
echo "No [admin] section was configured, so the KBS generated an admin key pair:"
grep -o 'private_key=[^ ]*' "$work/kbs.log" | head -1
client="$BIN/kbs-client --url $url"
admin="config --auth-private-key $work/data/admin/private.key"

say "The workload owner stores a secret at default/key/demo"
printf 'the database password is hunter2\n' > "$work/secret"
$client $admin set-resource --path default/key/demo --resource-file "$work/secret"
echo "stored $(wc -c <"$work/secret") bytes"

say "A sample guest attests and asks for it: the default resource policy refuses"
if out=$($client get-resource --path default/key/demo 2>&1); then
  echo "unexpected: the secret was released"; exit 1
fi
echo "refused: ${out#kbs-client: }"
echo "(the sample TEE proves nothing, so Cocoon's default policy never releases to it)"

say "The owner registers reference values for the sample TEE"
$client $admin set-sample-reference-value launch_digest abcde
$client $admin set-sample-reference-value svn 1
$client $admin set-sample-reference-value major_version 1 --as-integer --as-single-value
$client $admin set-sample-reference-value minimum_minor_version 1 --as-integer --as-single-value
echo "launch_digest = $($client $admin get-reference-value --id launch_digest)"

say "...and, for this demo, a resource policy that releases to any affirming appraisal"
$client $admin set-resource-policy --affirming
echo "resource policy set"

say "The guest attests again: the attestation token shows an affirming appraisal"
token=$($client attest)
payload=$(echo "$token" | cut -d. -f2 | tr '_-' '/+')
while [ $(( ${#payload} % 4 )) -ne 0 ]; do payload="$payload="; done
echo "$payload" | base64 -d | python3 -c 'import json,sys; c=json.load(sys.stdin)["submods"]["cpu0"]; print("ear.status:", c["ear.status"]); print("trust vector:", json.dumps(c["ear.trustworthiness-vector"]))'

say "The guest fetches the secret: it arrives sealed to its TEE key and is opened inside"
secret=$($client get-resource --path default/key/demo | base64 -d)
echo "released: $secret"

say "Done. The KBS's audit log:"
grep 'msg=audit' "$work/kbs.log" | sed 's/^time=[^ ]* //'

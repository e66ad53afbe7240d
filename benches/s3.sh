#!/usr/bin/env bash
# Upload throughput of a ≥256 MiB object to moto: through the `s3` plugin
# (operator host, sandbox, wasi:http) versus native opendal of the same
# version against the same server, alternating, in one run. Also prints
# every plugin's size raw and gzipped. Results go in docs/benchmarks.md.
# Usage: benches/s3.sh [MiB] [runs]   (default 256 MiB, 3 runs)
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"
mib="${1:-256}"; runs="${2:-3}"
"$ROOT/scripts/setup.sh" >/dev/null
(cd plugins && ./build.sh >/dev/null)
cargo build --quiet --release --example upload
(cd benches/s3-native && cargo build --quiet --release)
upload="$CARGO_TARGET_DIR/release/examples/upload"
native="$CARGO_TARGET_DIR/release/s3-native"

port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"
"$ETCD_OPERATOR_TOOLS/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
until "$ETCD_OPERATOR_TOOLS/venv/bin/python" -c "
import boto3; boto3.client('s3', endpoint_url='$endpoint', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='bench')" 2>/dev/null; do
  sleep 0.2
done
reset() { curl -s -X POST "$endpoint/moto-api/reset" >/dev/null 2>&1 || true; "$ETCD_OPERATOR_TOOLS/venv/bin/python" -c "
import boto3; boto3.client('s3', endpoint_url='$endpoint', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='bench')"; }
creds=$'[default]\naws_access_key_id = test\naws_secret_access_key = test\n'
# Warm the compile cache so the plugin run measures the upload only.
ALLOW_ENDPOINT="$endpoint" ALLOW_NETWORK=127.0.0.1/32 "$upload" plugins/dist/s3.wasm 1 warm \
  bucket=bench endpoint="$endpoint" force-path-style=true "credentials=$creds" >/dev/null

printf "run  plugin(s)  MiB/s   native(s)  MiB/s   plugin/native throughput\n"
for r in $(seq 1 "$runs"); do
  reset
  p=$(ALLOW_ENDPOINT="$endpoint" ALLOW_NETWORK=127.0.0.1/32 "$upload" plugins/dist/s3.wasm "$mib" "obj-$r" \
    bucket=bench endpoint="$endpoint" force-path-style=true "credentials=$creds")
  reset
  n=$("$native" "$endpoint" bench "obj-$r" "$mib")
  awk -v r="$r" -v p="$p" -v n="$n" -v m="$mib" 'BEGIN { printf "%-4s %-10.2f %-7.1f %-10.2f %-7.1f %.2f\n", r, p, m/p, n, m/n, n/p }'
done
echo
plugins/check-size.sh

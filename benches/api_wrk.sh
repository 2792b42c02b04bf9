#!/usr/bin/env bash
# API load from a second process (wrk): GET /v1/incidents over 10,000 incidents (first
# page, and a page deep in the list through the `before` cursor) and POST /v1/events
# (batches of 100 events), each for 20 s with 4 connections, with a bearer token.
#
# usage: benches/api_wrk.sh        (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build -j"${VIGIL_JOBS:-2}" --release --bin vigil
vigil="$CARGO_TARGET_DIR/release/vigil"
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/rules"
cp rules/ssh_brute_force.rhai "$dir/rules/"   # one rule, no playbooks: incidents only
port=18990
cat > "$dir/vigil.toml" <<TOML
[api]
listen = "127.0.0.1:$port"
[api.auth]
rate_per_second = 1000000   # measure the server, not the per-token limit
burst = 1000000
[store]
path = "$dir/data"
[rules]
dir = "$dir/rules"
watch = false
[telemetry]
log_level = "warn"
[ingest]
max_body_bytes = "64MiB"
TOML
token=$("$vigil" --config "$dir/vigil.toml" token create --role admin --name wrk 2>/dev/null)
"$vigil" --config "$dir/vigil.toml" serve 2>"$dir/log" &
pid=$!
curl -sf --retry 60 --retry-connrefused --retry-max-time 60 "127.0.0.1:$port/readyz" >/dev/null

echo "seeding 10,000 incidents (100,000 events)…" >&2
python3 - "$dir/seed.ndjson" <<'PY'
import json, sys, datetime
now = datetime.datetime.now(datetime.timezone.utc)
with open(sys.argv[1], "w") as f:
    for n in range(10_000):
        ip = f"10.{n // 65536}.{(n // 256) % 256}.{n % 256}"
        for i in range(10):
            t = (now - datetime.timedelta(seconds=600 - i)).isoformat()
            f.write(json.dumps({"class": "authentication", "action": "ssh_login", "outcome": "failure",
                                "source": {"ip": ip}, "time": t}) + "\n")
PY
split -l 20000 "$dir/seed.ndjson" "$dir/part-"
for part in "$dir"/part-*; do
  curl -sf -H "Authorization: Bearer $token" --data-binary "@$part" "127.0.0.1:$port/v1/events" >/dev/null
done
count() { curl -sf -H "Authorization: Bearer $token" "127.0.0.1:$port/metrics" | awk '/^vigil_incidents_opened_total/ {s+=$2} END {print s+0}'; }
# Polls a condition, with a deadline.
deadline=$((SECONDS + 120))
until [ "$(count)" -ge 10000 ]; do
  [ $SECONDS -lt $deadline ] || { echo "detection did not open 10,000 incidents in 120 s" >&2; exit 1; }
  sleep 0.5
done
before=$(curl -sf -H "Authorization: Bearer $token" "127.0.0.1:$port/v1/incidents?limit=1000" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["incidents"][-1]["id"])')

python3 - "$dir/batch.json" <<'PY'
import json, sys
events = [{"class": "network", "action": "connection", "source": {"ip": "192.0.2.1", "port": 40000 + i},
           "destination": {"ip": "198.51.100.1", "port": 443}, "message": "bench"} for i in range(100)]
open(sys.argv[1], "w").write(json.dumps(events))
PY
cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
local f = io.open("$dir/batch.json", "rb"); wrk.body = f:read("*a"); f:close()
LUA

run() { echo "== $1"; shift; wrk -t2 -c4 -d20s --latency "$@" | grep -E "Requests/sec|Latency  |50%|99%|Non-2xx"; }
run "GET /v1/incidents?limit=100 (newest page of 10,000)" -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/incidents?limit=100"
run "GET /v1/incidents?limit=100&before=<1,000th> (a deep page)" -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/incidents?limit=100&before=$before"
run "POST /v1/events (100 events per request)" -s "$dir/post.lua" "http://127.0.0.1:$port/v1/events"

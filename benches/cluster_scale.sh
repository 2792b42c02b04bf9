#!/usr/bin/env bash
# Scale-out through NATS JetStream: events/s consumed (stored durably, detection running)
# by 1, 2 and 3 Vigil instances splitting 6 partitions, all on this machine (so they share
# its cores with nats-server). Also the producer side (`vigil publish`, acked by
# JetStream) and, as the no-JetStream baseline, `vigil ingest` of the same file straight
# into a log.
#
# usage: benches/cluster_scale.sh [EVENTS]     (default 200000; needs nats-server)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
events="${1:-200000}"
command -v nats-server >/dev/null || { echo "nats-server is missing: apt-get install nats-server" >&2; exit 1; }
cargo build -j"${VIGIL_JOBS:-2}" --release --bin vigil
vigil="$CARGO_TARGET_DIR/release/vigil"
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port=14222
nats-server -a 127.0.0.1 -p $port -js -sd "$dir/js" >"$dir/nats.log" 2>&1 &
pids+=($!)
# Ready when it says so (no polling).
timeout 10 grep -q -m1 "Server is ready" <(tail -F "$dir/nats.log" 2>/dev/null)

python3 - "$dir/events.ndjson" "$events" <<'PY'
import json, sys, datetime, random
random.seed(1)
now = datetime.datetime.now(datetime.timezone.utc)
with open(sys.argv[1], "w") as f:
    for n in range(int(sys.argv[2])):
        ip = f"10.{random.randrange(4)}.{random.randrange(256)}.{random.randrange(256)}"
        t = (now - datetime.timedelta(seconds=600 - n * 600 / int(sys.argv[2]))).isoformat()
        f.write(json.dumps({"class": "authentication", "action": "ssh_login", "outcome": "failure",
                            "source": {"ip": ip}, "user": {"name": "root"}, "time": t}) + "\n")
PY
now() { date +%s.%N; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):,.0f}')"; }

t0=$(now)
"$vigil" publish "$dir/events.ndjson" --url "nats://127.0.0.1:$port" --partitions 6 >/dev/null
t1=$(now)
echo "publish (partitioned, each acked by JetStream): $(rate "$events" "$t0" "$t1") events/s"

mkdir -p "$dir/base"
t0=$(now)
"$vigil" --data-dir "$dir/base/data" ingest "$dir/events.ndjson" >/dev/null
t1=$(now)
echo "baseline, vigil ingest into the log (no JetStream, no detection): $(rate "$events" "$t0" "$t1") events/s"

consumed() {
  local sum=0
  for p in "$@"; do
    v=$(curl -sf "127.0.0.1:$p/metrics" | awk '/^vigil_nats_consumed_total/ {s+=$2} END {print s+0}')
    sum=$((sum + ${v%.*}))
  done
  echo "$sum"
}

for n in 1 2 3; do
  case $n in
    1) owned=("[0,1,2,3,4,5]") ;;
    2) owned=("[0,1,2]" "[3,4,5]") ;;
    3) owned=("[0,1]" "[2,3]" "[4,5]") ;;
  esac
  ports=()
  for i in $(seq 0 $((n - 1))); do
    p=$((18800 + n * 10 + i))
    d="$dir/n$n-$i"
    mkdir -p "$d"
    cat > "$d/vigil.toml" <<TOML
[api]
listen = "127.0.0.1:$p"
[api.auth]
required = false
[store]
path = "$d/data"
[rules]
dir = "$PWD/rules"
watch = false
[telemetry]
log_level = "warn"
[playbooks]
dry_run = true
[sources.nats]
url = "nats://127.0.0.1:$port"
partitions = 6
owned = ${owned[$i]}
consumer = "scale$n"
batch = 1024
TOML
    ports+=("$p")
  done
  t0=$(now)
  for i in $(seq 0 $((n - 1))); do
    "$vigil" --config "$dir/n$n-$i/vigil.toml" serve 2>"$dir/n$n-$i/log" &
    pids+=($!)
  done
  # Polls the instances' counters (the measurement's resolution is the 0.2 s interval),
  # with a deadline.
  deadline=$((SECONDS + 600))
  until [ "$(consumed "${ports[@]}")" -ge "$events" ]; do
    [ $SECONDS -lt $deadline ] || { echo "$n instance(s) did not consume $events events in 600 s" >&2; exit 1; }
    sleep 0.2
  done
  t1=$(now)
  echo "$n instance(s): $(rate "$events" "$t0" "$t1") events/s consumed (stored, detected, acked)"
done

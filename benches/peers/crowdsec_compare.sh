#!/usr/bin/env bash
# Side-by-side SSH brute-force replay: CrowdSec 1.4 (Debian bookworm package, offline, in
# its time-machine replay mode) and Vigil (`vigil rules backtest --input`, syslog parsing
# and the shipped rule pack), on the same synthetic auth log with ground truth.
#
# usage: benches/peers/crowdsec_compare.sh SYNTH_AUTH_PY [LINES] [WORKDIR]
#   SYNTH_AUTH_PY  the team's synth_auth.py (writes LOG and LOG.truth.json)
#   LINES          default 1000000
#   WORKDIR        default a new temporary directory
# Needs root for apt (crowdsec is installed with CAPI registration disabled, as its
# README.Debian documents) and a release build of vigil (built here if missing).
# Prints, for each engine: lines/s, CPU-seconds, peak RSS and the flagged source IPs
# scored against the ground truth.
set -euo pipefail
SYNTH=$1; LINES=${2:-1000000}; W=${3:-$(mktemp -d)}
cd "$(dirname "$0")/../.."
REPO=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"

if ! command -v crowdsec >/dev/null; then
  mkdir -p /etc/crowdsec
  [ -f /etc/crowdsec/online_api_credentials.yaml ] || \
    echo '# offline benchmark host, CAPI registration disabled (see README.Debian)' > /etc/crowdsec/online_api_credentials.yaml
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq crowdsec >/dev/null
fi
command -v /usr/bin/time >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
cargo build --release -j2 -p vigil --bin vigil >/dev/null
VIGIL="$CARGO_TARGET_DIR/release/vigil"

mkdir -p "$W"/{etc,data,log,results}
LOG="$W/auth.log"
[ -f "$LOG" ] || python3 "$SYNTH" "$LOG" --lines "$LINES" >/dev/null

# CrowdSec: an isolated config (nothing under /etc/crowdsec is changed), offline hub.
cp /etc/crowdsec/profiles.yaml /etc/crowdsec/simulation.yaml "$W/etc/"
cp -r /etc/crowdsec/patterns "$W/etc/"; mkdir -p "$W/etc/notifications"
echo "# replay-only" > "$W/etc/acquis.yaml"
cat > "$W/etc/config.yaml" <<YAML
common: { daemonize: false, log_media: file, log_level: info, log_dir: $W/log/, working_dir: . }
config_paths:
  config_dir: $W/etc/
  data_dir: $W/data/
  simulation_path: $W/etc/simulation.yaml
  hub_dir: /usr/share/crowdsec/hub/
  index_path: /usr/share/crowdsec/hub/.index.json
  notification_dir: $W/etc/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service: { acquisition_path: $W/etc/acquis.yaml, parser_routines: 1 }
cscli: { output: human, color: no, hub_branch: master }
db_config:
  log_level: info
  type: sqlite
  db_path: $W/data/crowdsec.db
  use_wal: true
  flush: { max_items: 5000000, max_age: 3650d }
api:
  client: { credentials_path: $W/etc/local_api_credentials.yaml }
  server: { log_level: info, listen_uri: 127.0.0.1:18080, profiles_path: $W/etc/profiles.yaml, trusted_ips: [127.0.0.1] }
prometheus: { enabled: false, level: full, listen_addr: 127.0.0.1, listen_port: 16060 }
YAML
C="cscli -c $W/etc/config.yaml --error"
$C parsers install crowdsecurity/syslog-logs crowdsecurity/sshd-logs crowdsecurity/dateparse-enrich crowdsecurity/whitelists >/dev/null
$C scenarios install crowdsecurity/ssh-bf crowdsecurity/ssh-slow-bf >/dev/null
mkdir -p "$W/etc/collections"
ln -sfn /usr/share/crowdsec/hub/collections/crowdsecurity/sshd.yaml "$W/etc/collections/sshd.yaml"
rm -f "$W"/data/crowdsec.db*
$C machines add bench --auto --force -f "$W/etc/local_api_credentials.yaml" >/dev/null
crowdsec -c "$W/etc/config.yaml" -no-cs > "$W/results/lapi.stdout" 2>&1 & LAPI=$!
trap 'kill $LAPI 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:18080/health >/dev/null && break; sleep 0.2; done

echo "== CrowdSec replay ($LINES lines)"
/usr/bin/time -v -o "$W/results/crowdsec.time" \
  crowdsec -c "$W/etc/config.yaml" -dsn "file://$LOG" -type syslog -no-api > "$W/results/crowdsec.stdout" 2>&1
prev=-1; stable=0
while [ $stable -lt 3 ]; do
  n=$(python3 -c "import sqlite3;print(sqlite3.connect('file:$W/data/crowdsec.db?mode=ro',uri=True).execute('select count(*) from alerts').fetchone()[0])")
  if [ "$n" = "$prev" ]; then stable=$((stable+1)); else stable=0; fi; prev=$n; sleep 1
done
python3 -c "import sqlite3;print('\n'.join(sorted({r[0] for r in sqlite3.connect('file:$W/data/crowdsec.db?mode=ro',uri=True).execute('select source_value from alerts')})))" > "$W/results/crowdsec.ips"
kill $LAPI; wait $LAPI 2>/dev/null || true; trap - EXIT

echo "== Vigil replay ($LINES lines)"
/usr/bin/time -v -o "$W/results/vigil.time" \
  "$VIGIL" rules backtest --rules "$REPO/rules" --input "$LOG" --format syslog --json > "$W/results/vigil.jsonl"
python3 - "$W/results/vigil.jsonl" > "$W/results/vigil.ips" <<'PY'
import json, sys
ips = set()
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["kind"] == "alert" and r["record"]["rule_id"] in ("ssh_brute_force", "ssh_slow_brute_force", "password_spraying", "brute_force_then_success"):
        ips.update(r["record"]["entities"].get("ips", []))
print("\n".join(sorted(ips)))
PY

python3 - "$W" "$LOG.truth.json" "$LINES" <<'PY'
import json, re, sys
W, truth_path, lines = sys.argv[1], sys.argv[2], int(sys.argv[3])
truth = json.load(open(truth_path))["attackers"]
def timing(name):
    t = open(f"{W}/results/{name}.time").read()
    g = lambda k: re.search(re.escape(k) + r".*?: (.*)", t).group(1).strip()
    wall = sum(float(p) * 60 ** i for i, p in enumerate(reversed(g("Elapsed (wall clock) time").split(":"))))
    cpu = float(g("User time (seconds)")) + float(g("System time (seconds)"))
    return wall, cpu, int(g("Maximum resident set size (kbytes)")) / 1024
print(f"{'engine':<10} {'lines/s':>10} {'wall s':>8} {'CPU s':>8} {'peak RSS':>10}  flagged  true+  false+  missed (of {len(truth)})")
for name in ("crowdsec", "vigil"):
    wall, cpu, rss = timing(name)
    flagged = {l.strip() for l in open(f"{W}/results/{name}.ips") if l.strip()}
    tp = len(flagged & truth.keys()); fp = len(flagged - truth.keys()); missed = sorted(truth.keys() - flagged)
    print(f"{name:<10} {lines / wall:>10,.0f} {wall:>8.1f} {cpu:>8.1f} {rss:>8.0f} MiB  {len(flagged):>7}  {tp:>5}  {fp:>6}  {len(missed):>6}")
    if missed:
        print(f"           missed: " + ", ".join(f"{ip} ({truth[ip]})" for ip in missed))
PY
echo "(work directory: $W)"

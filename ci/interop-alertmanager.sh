#!/usr/bin/env bash
# Interop: rearguard as the Alertmanager of a real Prometheus (Debian's 2.42)
# and of amtool (Debian's prometheus-alertmanager 0.25).
#
# 1. Prometheus evaluates `vector(1)` every second and posts the alert to
#    rearguard (api_version v2, bearer token from a credentials_file);
#    rearguard routes it to a webhook receiver (a python3 http.server), which
#    must get Alertmanager's v4 payload with Prometheus's labels, annotations
#    and generatorURL.
# 2. amtool, with the admin token in --http.config.file: alert query, silence
#    add/query, alert query --silenced, silence expire, silence query --expired.
#
# Usage: ci/interop-alertmanager.sh [path/to/rearguard]   (default target/debug/rearguard)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/debug/rearguard}"
[ -x "$BIN" ] || cargo build -q --bin rearguard
for tool in prometheus amtool python3 curl; do
  command -v "$tool" >/dev/null || { echo "interop: $tool is not installed" >&2; exit 2; }
done

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "---- rearguard log" >&2; tail -n 60 "$WORK/rearguard.log" >&2 || true
    echo "---- prometheus log" >&2; tail -n 30 "$WORK/prometheus.log" >&2 || true
    echo "---- prometheus notifier metrics" >&2
    curl -s "http://127.0.0.1:${PROM_PORT:-0}/metrics" 2>/dev/null | grep -E '^prometheus_notifications_(sent|errors|dropped)_total' >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RG_PORT=$(free_port); PROM_PORT=$(free_port); HOOK_PORT=$(free_port)
RG="http://127.0.0.1:$RG_PORT"

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "interop: timed out waiting for $what" >&2
  return 1
}

# --- the webhook receiver: one file per POST body
mkdir -p "$WORK/hook"
cat >"$WORK/hook.py" <<'PY'
import http.server, os, sys, time
out = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(os.path.join(out, "%f.json" % time.time()), "wb") as f:
            f.write(body)
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$WORK/hook.py" "$HOOK_PORT" "$WORK/hook" & PIDS+=($!)

# --- rearguard
printf 'interop-admin-token\n' >"$WORK/admin-token"
printf 'interop-sender-token\n' >"$WORK/sender-token"
chmod 600 "$WORK/admin-token" "$WORK/sender-token"
cat >"$WORK/rearguard.yaml" <<YAML
listen: 127.0.0.1:$RG_PORT
state_dir: $WORK/state
admin:
  token_file: $WORK/admin-token
  alert_token_file: $WORK/sender-token
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:$HOOK_PORT/alerts
YAML
"$BIN" run --config "$WORK/rearguard.yaml" >"$WORK/rearguard.log" 2>&1 & PIDS+=($!)
wait_for 30 "rearguard to listen" curl -sf "$RG/healthz"

# --- Prometheus: one rule that fires at once, rearguard as its Alertmanager.
# A short resend delay: alerts evaluated before the notifier has discovered its
# Alertmanagers (a few seconds) are dropped and only re-sent after it (1m default).
cat >"$WORK/rules.yml" <<'YAML'
groups:
  - name: interop
    rules:
      - alert: InteropAlwaysFiring
        expr: vector(1)
        labels:
          severity: critical
        annotations:
          summary: interop alert from Prometheus
YAML
cat >"$WORK/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels:
    replica: interop-a
rule_files: [$WORK/rules.yml]
alerting:
  alertmanagers:
    - api_version: v2
      authorization:
        credentials_file: $WORK/sender-token
      static_configs:
        - targets: ["127.0.0.1:$RG_PORT"]
YAML
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --rules.alert.resend-delay=2s >"$WORK/prometheus.log" 2>&1 & PIDS+=($!)

# --- 1. the alert reaches the webhook through rearguard's routing, in v4 shape
echo "interop: waiting for the webhook ($(date +%T))"
have_hook() { ls "$WORK"/hook/*.json >/dev/null 2>&1; }
wait_for 60 "a webhook notification from rearguard" have_hook
echo "interop: webhook reached ($(date +%T))"
python3 - "$WORK"/hook/*.json <<'PY'
import json, sys
p = json.load(open(sorted(sys.argv[1:])[0]))
def check(cond, what):
    if not cond:
        sys.exit("interop: webhook payload: %s\n%s" % (what, json.dumps(p, indent=2)))
check(p.get("version") == "4", "version 4")
check(p.get("status") == "firing", "status firing")
check(p.get("receiver") == "hook", "receiver hook")
check(p.get("groupLabels") == {"alertname": "InteropAlwaysFiring"}, "groupLabels")
check("groupKey" in p and "truncatedAlerts" in p and "externalURL" in p, "v4 fields")
a = p["alerts"][0]
check(a["labels"] == {"alertname": "InteropAlwaysFiring", "severity": "critical", "replica": "interop-a"},
      "Prometheus's labels (with its external_labels)")
check(a["annotations"] == {"summary": "interop alert from Prometheus"}, "annotations")
check(a["status"] == "firing", "alert status")
check("/graph?g0.expr=vector" in a.get("generatorURL", ""), "Prometheus's generatorURL")
check(a.get("fingerprint"), "fingerprint")
print("interop: Prometheus -> rearguard -> webhook: v4 payload ok")
PY
sent=$(curl -s "http://127.0.0.1:$PROM_PORT/metrics" | awk '/^prometheus_notifications_sent_total/ {s+=$2} END {print s+0}')
errors=$(curl -s "http://127.0.0.1:$PROM_PORT/metrics" | awk '/^prometheus_notifications_errors_total/ {s+=$2} END {print s+0}')
echo "interop: prometheus_notifications_sent_total=$sent errors_total=$errors"
[ "$errors" = "0" ] || { echo "interop: Prometheus saw errors sending to rearguard" >&2; exit 1; }

# --- 2. amtool with the admin token
cat >"$WORK/amtool-http.yml" <<YAML
authorization:
  type: Bearer
  credentials_file: $WORK/admin-token
YAML
AM=(amtool --alertmanager.url="$RG" --http.config.file="$WORK/amtool-http.yml")
expect() { # expect PATTERN COMMAND...: the output must contain PATTERN
  local pat=$1; shift
  local out
  out=$("$@" 2>&1) || { echo "interop: failed: $*" >&2; echo "$out" >&2; return 1; }
  grep -q -- "$pat" <<<"$out" || { echo "interop: '$pat' not in the output of: $*" >&2; echo "$out" >&2; return 1; }
  echo "interop: ok: ${*:4}"
}
expect_not() {
  local pat=$1; shift
  local out
  out=$("$@" 2>&1) || { echo "interop: failed: $*" >&2; echo "$out" >&2; return 1; }
  if grep -q -- "$pat" <<<"$out"; then echo "interop: '$pat' unexpectedly in: $*" >&2; echo "$out" >&2; return 1; fi
  echo "interop: ok (absent): ${*:4}"
}
expect InteropAlwaysFiring "${AM[@]}" alert query
expect interop-a "${AM[@]}" -o extended alert query alertname=InteropAlwaysFiring
SID=$("${AM[@]}" silence add alertname=InteropAlwaysFiring --comment="interop test" --author=ci --duration=1h)
[[ "$SID" =~ ^[0-9a-f-]{8,}$ ]] || { echo "interop: silence add printed '$SID', not an id" >&2; exit 1; }
echo "interop: ok: silence add -> $SID"
expect "$SID" "${AM[@]}" silence query
expect "$SID" "${AM[@]}" silence query alertname=InteropAlwaysFiring
expect InteropAlwaysFiring "${AM[@]}" alert query --silenced
expect_not InteropAlwaysFiring "${AM[@]}" alert query
"${AM[@]}" silence expire "$SID"
echo "interop: ok: silence expire $SID"
expect "$SID" "${AM[@]}" silence query --expired
expect_not "$SID" "${AM[@]}" silence query
expect InteropAlwaysFiring "${AM[@]}" alert query
# The sender token cannot manage silences.
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer interop-sender-token" "$RG/api/v2/silence/$SID")
[ "$code" = "401" ] || { echo "interop: sender token expired a silence (HTTP $code)" >&2; exit 1; }
# However often Prometheus re-sent the alert, rearguard notified once.
firing=$(cat "$WORK"/hook/*.json | grep -o '"status":"firing"' | wc -l)
n=$(ls "$WORK"/hook/*.json | wc -l)
[ "$n" = "1" ] || { echo "interop: $n webhook notifications, expected 1" >&2; exit 1; }
echo "interop: ok: one webhook notification (prometheus_notifications_sent_total: $(curl -s "http://127.0.0.1:$PROM_PORT/metrics" | awk '/^prometheus_notifications_sent_total/ {s+=$2} END {print s+0}'))"
echo "interop: all checks passed"

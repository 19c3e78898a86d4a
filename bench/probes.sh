#!/usr/bin/env bash
# Probe engine benchmark: PROBES HTTP targets on loopback, one probe each at a
# 1 s interval, for DURATION seconds. Prints the probes per second achieved,
# CPU seconds per 1,000 probes, the share of one core, and peak RSS.
#
# Usage: bench/probes.sh [DURATION_SECONDS=60] [PROBES=1000]
# Goal (issue 2): 1,000 probes/s using under a quarter of one core and under 64 MiB RSS.
set -euo pipefail

DURATION=${1:-60}
PROBES=${2:-1000}
LISTEN=${LISTEN:-127.0.0.1:19464}

cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}
PROFILE=${PROFILE:-release} # PROFILE=debug checks the script quickly; the figures need release
echo "building ($PROFILE)..." >&2
if [ "$PROFILE" = release ]; then
    cargo build --release --quiet --bin rearguard --example bench_target
else
    cargo build --quiet --bin rearguard --example bench_target
fi

# 1,000 keep-alive connections need more than the usual 1,024 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d)
TARGET_PID=""
REARGUARD_PID=""
cleanup() {
    [ -n "$REARGUARD_PID" ] && kill "$REARGUARD_PID" 2>/dev/null || true
    [ -n "$TARGET_PID" ] && kill "$TARGET_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$TARGET_DIR/$PROFILE"/examples/bench_target "$PROBES" "$WORK/ports" &
TARGET_PID=$!
for _ in $(seq 100); do [ -f "$WORK/ports" ] && break; sleep 0.1; done
[ -f "$WORK/ports" ] || { echo "bench_target did not start" >&2; exit 1; }

{
    echo "listen: $LISTEN"
    echo "state_dir: $WORK/state"
    echo "probes:"
    i=0
    while read -r port; do
        echo "  - name: t$i"
        echo "    url: http://127.0.0.1:$port/health"
        echo "    interval: 1s"
        echo "    timeout: 1s"
        echo "    expect: { body_contains: healthy }"
        i=$((i + 1))
    done <"$WORK/ports"
} >"$WORK/rearguard.yaml"

"$TARGET_DIR/$PROFILE"/rearguard run --config "$WORK/rearguard.yaml" 2>"$WORK/rearguard.log" &
REARGUARD_PID=$!

# Ready = every probe has run once.
for _ in $(seq 300); do
    curl -sf "http://$LISTEN/readyz" >/dev/null 2>&1 && break
    kill -0 "$REARGUARD_PID" 2>/dev/null || { echo "rearguard exited:" >&2; cat "$WORK/rearguard.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf "http://$LISTEN/readyz" >/dev/null || { echo "rearguard never became ready" >&2; exit 1; }

runs() { # total runs, and failed runs
    curl -sf "http://$LISTEN/metrics" | awk '
        /^rearguard_probe_runs_total/ { total += $NF; if ($0 ~ /result="failure"/) failed += $NF }
        END { printf "%d %d\n", total, failed }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$REARGUARD_PID/stat"; }
now() { date +%s.%N; }

sleep 2 # let the schedule settle after start-up
read -r runs0 failed0 < <(runs)
cpu0=$(cpu_ticks)
t0=$(now)
# RSS every 10 s, to tell a leak from a plateau.
end=$(($(date +%s) + DURATION))
rss_trend=""
while [ "$(date +%s)" -lt "$end" ]; do
    left=$((end - $(date +%s)))
    sleep $((left < 10 ? left : 10))
    rss_trend="$rss_trend $(awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$REARGUARD_PID/status")"
done
read -r runs1 failed1 < <(runs)
cpu1=$(cpu_ticks)
t1=$(now)
hwm_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$REARGUARD_PID/status")
rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$REARGUARD_PID/status")
hz=$(getconf CLK_TCK)

awk -v r0="$runs0" -v r1="$runs1" -v f0="$failed0" -v f1="$failed1" -v c0="$cpu0" -v c1="$cpu1" \
    -v t0="$t0" -v t1="$t1" -v hz="$hz" -v hwm="$hwm_kb" -v rss="$rss_kb" -v n="$PROBES" '
BEGIN {
    secs = t1 - t0; runs = r1 - r0; cpu = (c1 - c0) / hz
    printf "probes configured:        %d (1 s interval), measured over %.1f s\n", n, secs
    printf "probes per second:        %.1f (%d runs, %d failed)\n", runs / secs, runs, f1 - f0
    printf "CPU seconds per 1,000:    %.3f\n", (runs > 0 ? cpu / runs * 1000 : 0)
    printf "share of one core:        %.1f%%\n", cpu / secs * 100
    printf "peak RSS:                 %.1f MiB (now %.1f MiB)\n", hwm / 1024, rss / 1024
}'
echo "RSS every 10 s (MiB):    $rss_trend"

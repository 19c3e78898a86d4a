#!/usr/bin/env bash
# Side-by-side benchmark: the same TARGETS HTTP targets on loopback, probed
# every second for DURATION seconds, and the same alerting rule, run by
#   (a) rearguard (`rearguard run`), and
#   (b) Debian's prometheus + prometheus-blackbox-exporter (module http_2xx).
# The two stacks run one after the other (not at the same time), so that on a
# small machine neither steals the other's CPU; each gets the same targets,
# the same DURATION, and the same failure at the same point of its window.
#
# Measured for each stack, over the DURATION window that starts once every
# target has been probed at least once:
#   - CPU seconds: utime + stime (/proc/PID/stat) of every process of the
#     stack (rearguard; prometheus + blackbox exporter);
#   - peak RSS: VmHWM (/proc/PID/status), summed over the stack's processes;
#   - alert latency: half-way through the window one target (a separate
#     process) is killed; the stack's GET /api/v1/alerts is polled every
#     100 ms until the alert for that target's instance is firing;
#   - memory per sample: growth of the storing process's
#     process_resident_memory_bytes over the window divided by the samples
#     it appended (rearguard_tsdb_samples_appended_total;
#     prometheus_tsdb_head_samples_appended_total), both from its /metrics;
#     and the same over the window's second half only (sampled every 10 s),
#     which leaves out what settles once (connection pools, buffers, the
#     first chunks of every series) and keeps what grows with samples;
#   - open sockets of the stack's processes at the end of the window (each
#     keep-alive connection is one).
# The target server (examples/bench_target) is not counted in either stack.
#
# Usage: bench/side_by_side.sh [DURATION_SECONDS=60]
# Environment: TARGETS (1000), PROFILE (release; debug only to check the
# script), REARGUARD_PORT (19470), PROMETHEUS_PORT (19490),
# BLACKBOX_PORT (19415), ALERT_FOR (0s: the rule's `for`), ONLY
# (rearguard|prometheus: run one stack), BUILD=0 (skip the build).
set -euo pipefail

DURATION=${1:-60}
TARGETS=${TARGETS:-1000}
PROFILE=${PROFILE:-release}
REARGUARD_PORT=${REARGUARD_PORT:-19470}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-19490}
BLACKBOX_PORT=${BLACKBOX_PORT:-19415}
ALERT_FOR=${ALERT_FOR:-0s}
# rearguard's per-probe keep_alive (false = a new connection per probe, as the
# blackbox exporter's http prober does).
KEEP_ALIVE=${KEEP_ALIVE:-false}
VICTIMS=${VICTIMS:-3}
ONLY=${ONLY:-}
POLL_LIMIT_S=30 # give up waiting for an alert after this long

die() { echo "side_by_side: $*" >&2; exit 1; }
say() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 10 ] ||
    die "DURATION must be a whole number of seconds, at least 10 (got '$DURATION')"
[[ "$VICTIMS" =~ ^[0-9]+$ ]] && [ "$VICTIMS" -ge 1 ] && [ "$VICTIMS" -le 10 ] ||
    die "VICTIMS must be a whole number from 1 to 10 (got '$VICTIMS')"
[[ "$TARGETS" =~ ^[0-9]+$ ]] && [ "$TARGETS" -gt "$VICTIMS" ] ||
    die "TARGETS must be a whole number above VICTIMS=$VICTIMS (got '$TARGETS')"
case "$ONLY" in "" | rearguard | prometheus) ;; *) die "ONLY must be rearguard or prometheus" ;; esac

cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}

# --- tools ------------------------------------------------------------------
for tool in curl jq awk cargo; do
    command -v "$tool" >/dev/null || die "'$tool' is required but not installed"
done
if [ "$ONLY" != rearguard ]; then
    if ! command -v prometheus >/dev/null || ! command -v prometheus-blackbox-exporter >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing prometheus and prometheus-blackbox-exporter with apt-get..."
            apt-get install -y --no-install-recommends prometheus prometheus-blackbox-exporter >/dev/null ||
                die "apt-get install failed; install prometheus and prometheus-blackbox-exporter yourself"
        else
            die "prometheus and prometheus-blackbox-exporter are required: apt-get install -y --no-install-recommends prometheus prometheus-blackbox-exporter"
        fi
    fi
fi

# --- ports ------------------------------------------------------------------
port_busy() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
for var in REARGUARD_PORT PROMETHEUS_PORT BLACKBOX_PORT; do
    port=${!var}
    [[ "$port" =~ ^[0-9]+$ ]] || die "$var must be a port number (got '$port')"
    port_busy "$port" && die "port $port ($var) is busy on 127.0.0.1; free it or set $var to another port"
done

# --- build ------------------------------------------------------------------
if [ "${BUILD:-1}" = 0 ]; then
    say "BUILD=0: using the binaries already in $TARGET_DIR/$PROFILE"
elif [ "$PROFILE" = release ]; then
    say "building rearguard and the target server: cargo build --release (a cold build takes minutes)..."
    cargo build --release --bin rearguard --example bench_target
else
    say "building rearguard and the target server ($PROFILE)..."
    cargo build --bin rearguard --example bench_target
fi
REARGUARD_BIN="$TARGET_DIR/$PROFILE/rearguard"
TARGET_BIN="$TARGET_DIR/$PROFILE/examples/bench_target"
[ -x "$REARGUARD_BIN" ] && [ -x "$TARGET_BIN" ] || die "build did not produce $REARGUARD_BIN and $TARGET_BIN"

# 1,000 connections (and Prometheus's TSDB files) need more than 1,024 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d)
PIDS=() # every process this script started, for cleanup
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
alive() { kill -0 "$1" 2>/dev/null; }
stop() { # PID...: stop these processes and wait for them
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}
cpu_ticks() { # PID...: summed utime + stime, in clock ticks
    local pid sum=0 t
    for pid in "$@"; do
        # Field 2 (comm) may hold spaces; count fields after the closing parenthesis.
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
        sum=$((sum + t))
    done
    echo "$sum"
}
peak_rss_kb() { # PID...: summed VmHWM in KiB
    local pid
    for pid in "$@"; do awk '/^VmHWM/ { print $2 }' "/proc/$pid/status"; done | awk '{ s += $1 } END { print s + 0 }'
}
# wait_for SECONDS DESCRIPTION PID COMMAND...: run COMMAND every 0.2 s until it
# succeeds (0), PID exits (1), or SECONDS pass (2, with a warning).
wait_for() {
    local limit=$1 what=$2 pid=$3
    local deadline=$((SECONDS + limit))
    shift 3
    while ((SECONDS < deadline)); do
        "$@" && return 0
        alive "$pid" || return 1
        sleep 0.2
    done
    say "WARNING: still waiting for $what after $limit s; measuring anyway"
    return 2
}
TARGET_PID=""
start_target() { # COUNT PORTS_FILE: start a bench_target; its PID goes to TARGET_PID
    "$TARGET_BIN" "$1" "$2" >/dev/null 2>&1 &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    local i
    for ((i = 0; i < 100; i++)); do [ -f "$2" ] && break; sleep 0.1; done
    [ -f "$2" ] || die "bench_target ($1 targets) did not start"
}

# --- shared targets ---------------------------------------------------------
# TARGETS-VICTIMS healthy targets shared by both runs, plus VICTIMS
# "victims" per run: each a separate bench_target serving a single target,
# killed at a known time (connection refused from then on) to start the
# latency clock. The victims fail one after another, spread over the window.
say "starting $((TARGETS - VICTIMS)) healthy targets..."
start_target $((TARGETS - VICTIMS)) "$WORK/shared_ports"

VICTIM_PIDS=()
VICTIM_PORTS=()
start_victims() { # DIR: start VICTIMS single-target servers
    local k
    VICTIM_PIDS=()
    VICTIM_PORTS=()
    for ((k = 0; k < VICTIMS; k++)); do
        start_target 1 "$1/victim_$k"
        VICTIM_PIDS+=("$TARGET_PID")
        VICTIM_PORTS+=("$(cat "$1/victim_$k")")
    done
}
all_ports() { cat "$WORK/shared_ports"; printf '%s\n' "${VICTIM_PORTS[@]}"; }

# The same rule set for both stacks: the alert the latency is measured on,
# plus the kinds of rules a probe setup carries (a recording rule, a range
# function over every target, an aggregate, a latency threshold).
cat >"$WORK/rules.yaml" <<EOF
groups:
  - name: side-by-side
    interval: 1s
    rules:
      - alert: TargetDown
        expr: probe_success == 0
        for: $ALERT_FOR
        labels:
          severity: page
        annotations:
          summary: '{{ \$labels.instance }} is down'
      - record: instance:probe_success:avg_1m
        expr: avg_over_time(probe_success[1m])
      - alert: AvailabilityLow
        expr: instance:probe_success:avg_1m < 0.99
        labels:
          severity: ticket
      - alert: ManyTargetsDown
        expr: count(probe_success == 0) > 10
        for: 10s
        labels:
          severity: page
      - alert: TargetSlow
        expr: probe_duration_seconds > 0.5
        for: 10s
        labels:
          severity: ticket
EOF

# Results, filled in by each run: RESULT_<stack>_<field>.
declare -A RESULT

firing_for() { # URL INSTANCE: does the alerts API at URL list TargetDown firing for INSTANCE?
    curl -sf --max-time 1 "$1" | jq -e --arg i "$2" \
        'any(.data.alerts[]; .state == "firing" and .labels.alertname == "TargetDown" and .labels.instance == $i)' >/dev/null 2>&1
}
firing_count() { # URL: number of firing TargetDown alerts
    { curl -sf --max-time 10 "$1" || true; } |
        jq '[.data.alerts[] | select(.state == "firing" and .labels.alertname == "TargetDown")] | length' 2>/dev/null || echo "?"
}

# fail_and_time STACK ALERTS_URL K: kill victim K, then poll ALERTS_URL every
# 100 ms until its alert fires; print the seconds that took ("timeout" if
# it did not within POLL_LIMIT_S).
fail_and_time() {
    local stack=$1 alerts_url=$2 k=$3 url t_fail deadline
    url="http://127.0.0.1:${VICTIM_PORTS[$k]}/health"
    # A loaded stack may have failed a probe of the healthy victim already.
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do firing_for "$alerts_url" "$url" || break; sleep 0.1; done
    if firing_for "$alerts_url" "$url"; then
        say "$stack: WARNING: $url alerts while still healthy; its latency is not measured"
        stop "${VICTIM_PIDS[$k]}"
        echo "n/a"
        return
    fi
    say "$stack: failing target $url, polling $alerts_url every 100 ms"
    stop "${VICTIM_PIDS[$k]}"
    t_fail=$(now)
    deadline=$((SECONDS + POLL_LIMIT_S))
    while ((SECONDS < deadline)); do
        if firing_for "$alerts_url" "$url"; then
            awk -v a="$t_fail" -v b="$(now)" 'BEGIN { printf "%.2f\n", b - a }'
            return
        fi
        sleep 0.1
    done
    echo timeout
}

# metric_sum URL NAME: the sum of NAME's samples in the /metrics text at URL
# (one number; 0 when absent).
metric_sum() {
    { curl -sf --max-time 10 "$1" || true; } |
        awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%.0f\n", s }'
}

# measure STACK ALERTS_URL PROBE_COUNTER METRICS_URL APPENDED_METRIC PID...:
# the measured window. PROBE_COUNTER is a command printing the stack's
# probes run so far; METRICS_URL is the /metrics of the process that stores
# the samples, APPENDED_METRIC its counter of samples appended.
measure() {
    local stack=$1 alerts_url=$2 counter=$3 metrics_url=$4 appended_metric=$5
    shift 5
    local pids=("$@") pid probes0 probes1 k latency latencies=() at
    sleep 2 # let the schedule settle after start-up
    local cpu0 t0 cpu1 t1 rss0 rss1 appended0 appended1
    probes0=$($counter)
    rss0=$(metric_sum "$metrics_url" process_resident_memory_bytes)
    appended0=$(metric_sum "$metrics_url" "$appended_metric")
    cpu0=$(cpu_ticks "${pids[@]}")
    t0=$(now)
    # "time rss appended" every 10 s, for the second-half growth.
    (while :; do
        echo "$(now) $(metric_sum "$metrics_url" process_resident_memory_bytes) $(metric_sum "$metrics_url" "$appended_metric")"
        sleep 10
    done) >"$WORK/${stack}_rss.log" 2>/dev/null &
    local sampler=$!
    # Victim K fails at t0 + DURATION * (K+1) / (VICTIMS+1), or as soon as
    # the previous one's alert fired if that is later.
    for k in "${!VICTIM_PORTS[@]}"; do
        at=$(awk -v t0="$t0" -v now="$(now)" -v d="$DURATION" -v k="$k" -v n="$VICTIMS" \
            'BEGIN { r = t0 + d * (k + 1) / (n + 1) - now; print (r > 0 ? r : 0) }')
        sleep "$at"
        latency=$(fail_and_time "$stack" "$alerts_url" "$k")
        say "$stack: alert firing after $latency s"
        latencies+=("$latency")
    done
    local rest
    rest=$(awk -v t0="$t0" -v now="$(now)" -v d="$DURATION" 'BEGIN { r = t0 + d - now; print (r > 0 ? r : 0) }')
    sleep "$rest"
    for pid in "${pids[@]}"; do alive "$pid" || die "$stack: process $pid exited during the run"; done
    cpu1=$(cpu_ticks "${pids[@]}")
    t1=$(now)
    probes1=$($counter)
    rss1=$(metric_sum "$metrics_url" process_resident_memory_bytes)
    appended1=$(metric_sum "$metrics_url" "$appended_metric")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    RESULT[${stack}_second_half]=$(awk -v mid="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (a + b) / 2 }')" \
        -v rss1="$rss1" -v n1="$appended1" '
        $1 >= mid && !seen { rss0 = $2; n0 = $3; seen = 1 }
        END { if (seen && n1 > n0) printf "%.2f", (rss1 - rss0) / (n1 - n0); else print "-" }' "$WORK/${stack}_rss.log")
    RESULT[${stack}_sockets]=$(for pid in "${pids[@]}"; do find "/proc/$pid/fd" -lname 'socket:*' 2>/dev/null; done | wc -l)
    RESULT[${stack}_appended]=$((appended1 - appended0))
    RESULT[${stack}_rss_growth]=$(awk -v a="$rss0" -v b="$rss1" 'BEGIN { printf "%.1f", (b - a) / 1048576 }')
    RESULT[${stack}_per_sample]=$(awk -v a="$rss0" -v b="$rss1" -v n="$((appended1 - appended0))" \
        'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "-" }')
    RESULT[${stack}_probes]=$((probes1 - probes0))
    RESULT[${stack}_cpu]=$(awk -v c0="$cpu0" -v c1="$cpu1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (c1 - c0) / hz }')
    RESULT[${stack}_secs]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    RESULT[${stack}_rss]=$(awk -v k="$(peak_rss_kb "${pids[@]}")" 'BEGIN { printf "%.1f", k / 1024 }')
    RESULT[${stack}_latency]=$(printf '%s\n' "${latencies[@]}" | awk '
        /^[0-9.]+$/ { s += $1; n++ } END { if (n == NR && n > 0) printf "%.2f", s / n; else print "timeout" }')
    RESULT[${stack}_latencies]=$(IFS=/; echo "${latencies[*]}")
    RESULT[${stack}_firing]=$(firing_count "$alerts_url")
}

# --- (a) rearguard ----------------------------------------------------------
run_rearguard() {
    local dir="$WORK/rearguard"
    mkdir -p "$dir"
    start_victims "$dir"
    {
        echo "listen: 127.0.0.1:$REARGUARD_PORT"
        echo "state_dir: $dir/state"
        echo "evaluation_interval: 1s"
        echo "rule_files: [$WORK/rules.yaml]"
        echo "probes:"
        local i=0 port
        while read -r port; do
            echo "  - { name: t$i, url: 'http://127.0.0.1:$port/health', interval: 1s, timeout: 1s, keep_alive: $KEEP_ALIVE }"
            i=$((i + 1))
        done < <(all_ports)
    } >"$dir/rearguard.yaml"

    say "rearguard: starting with $TARGETS probes at 1 s..."
    "$REARGUARD_BIN" run --config "$dir/rearguard.yaml" 2>"$dir/rearguard.log" &
    local pid=$!
    PIDS+=("$pid")
    ready() { curl -sf --max-time 1 "http://127.0.0.1:$REARGUARD_PORT/readyz" >/dev/null; }
    local rc=0
    wait_for 120 "rearguard /readyz (every probe run once)" "$pid" ready || rc=$?
    [ "$rc" != 1 ] || { tail -20 "$dir/rearguard.log" >&2; die "rearguard exited during start-up (log above)"; }

    probe_runs() { # runs so far (and, as a side effect, successes so far in $dir/ok)
        { curl -sf --max-time 10 "http://127.0.0.1:$REARGUARD_PORT/metrics" || true; } |
            awk -v ok="$dir/ok" '/^rearguard_probe_runs_total/ { s += $NF; if ($0 ~ /result="success"/) k += $NF }
                END { printf "%d\n", s; printf "%d\n", k >>ok }'
    }
    measure rearguard "http://127.0.0.1:$REARGUARD_PORT/api/v1/alerts" probe_runs \
        "http://127.0.0.1:$REARGUARD_PORT/metrics" rearguard_tsdb_samples_appended_total "$pid"
    local ok0 ok1
    ok0=$(tail -2 "$dir/ok" | head -1)
    ok1=$(tail -1 "$dir/ok")
    RESULT[rearguard_ok]=$(awk -v a="$ok0" -v b="$ok1" -v n="${RESULT[rearguard_probes]}" \
        'BEGIN { if (n > 0) printf "%.1f", (b - a) / n * 100; else print "-" }')
    stop "$pid"
}

# --- (b) prometheus + blackbox exporter --------------------------------------
run_prometheus() {
    local dir="$WORK/prometheus"
    mkdir -p "$dir/data"
    start_victims "$dir"
    cat >"$dir/blackbox.yml" <<EOF
modules:
  http_2xx:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
EOF
    {
        cat <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [$WORK/rules.yaml]
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params: { module: [http_2xx] }
    relabel_configs:
      - { source_labels: [__address__], target_label: __param_target }
      - { source_labels: [__param_target], target_label: instance }
      - { target_label: __address__, replacement: '127.0.0.1:$BLACKBOX_PORT' }
    static_configs:
      - targets:
EOF
        local port
        while read -r port; do
            echo "          - 'http://127.0.0.1:$port/health'"
        done < <(all_ports)
    } >"$dir/prometheus.yml"

    say "prometheus stack: starting blackbox exporter and prometheus with $TARGETS targets at 1 s..."
    prometheus-blackbox-exporter --config.file="$dir/blackbox.yml" \
        --web.listen-address="127.0.0.1:$BLACKBOX_PORT" 2>"$dir/blackbox.log" &
    local bb_pid=$!
    PIDS+=("$bb_pid")
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" 2>"$dir/prometheus.log" &
    local prom_pid=$!
    PIDS+=("$prom_pid")

    local api="http://127.0.0.1:$PROMETHEUS_PORT/api/v1"
    query() { { curl -sf --max-time 10 --data-urlencode "query=$1" "$api/query" || true; } | jq -r '.data.result[0].value[1] // "0"' 2>/dev/null || echo 0; }
    bb_ready() { curl -sf --max-time 1 "http://127.0.0.1:$BLACKBOX_PORT/metrics" >/dev/null; }
    local rc=0
    wait_for 60 "blackbox exporter" "$bb_pid" bb_ready || rc=$?
    [ "$rc" != 1 ] || { tail -20 "$dir/blackbox.log" >&2; die "blackbox exporter exited during start-up (log above)"; }
    # Ready = every target has been probed once (as rearguard's /readyz).
    all_probed() { [ "$(query 'count(probe_success)' 2>/dev/null)" = "$TARGETS" ]; }
    rc=0
    wait_for 120 "prometheus to probe all $TARGETS targets" "$prom_pid" all_probed || rc=$?
    [ "$rc" != 1 ] || { tail -20 "$dir/prometheus.log" >&2; die "prometheus exited during start-up (log above)"; }

    # Every scrape of the exporter is one probe.
    scrapes() {
        { curl -sf --max-time 10 "http://127.0.0.1:$PROMETHEUS_PORT/metrics" || true; } |
            awk '/^prometheus_target_interval_length_seconds_count/ { s += $NF } END { printf "%d\n", s }'
    }
    measure prometheus "$api/alerts" scrapes \
        "http://127.0.0.1:$PROMETHEUS_PORT/metrics" prometheus_tsdb_head_samples_appended_total "$prom_pid" "$bb_pid"
    # Successful probes in the window / probes attempted (a failed scrape counts as a failed probe).
    local ok
    ok=$(query "sum(sum_over_time(probe_success[${DURATION}s]))")
    RESULT[prometheus_ok]=$(awk -v k="$ok" -v n="${RESULT[prometheus_probes]}" \
        'BEGIN { if (n > 0) printf "%.1f", k / n * 100; else print "-" }')
    stop "$prom_pid" "$bb_pid"
}

STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
[ "$ONLY" = prometheus ] || run_rearguard
[ "$ONLY" = rearguard ] || run_prometheus

# --- table ------------------------------------------------------------------
r() { echo "${RESULT[$1]:--}"; }
ratio() { # A B: A / B, or - when either is missing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'
}
echo
echo "$TARGETS HTTP targets on loopback at 1 s, window ${DURATION} s, run one after the other; $STARTED; $(nproc) cores; rearguard keep_alive: $KEEP_ALIVE; load average before: $LOAD_BEFORE"
echo "rules: 5 (TargetDown: probe_success == 0, for: $ALERT_FOR; a recording rule, 3 more alerts), group interval 1 s; $VICTIMS targets failed one after another (expect $VICTIMS TargetDown firing at the end)"
echo
printf '| %-28s | %12s | %21s | %22s |\n' "" "rearguard" "prometheus + blackbox" "ratio (rg / prom)"
printf '|%s|%s|%s|%s|\n' "------------------------------" "-------------:" "----------------------:" "-----------------------:"
printf '| %-28s | %12s | %21s | %22s |\n' "CPU seconds in window" "$(r rearguard_cpu)" "$(r prometheus_cpu)" "$(ratio "$(r rearguard_cpu)" "$(r prometheus_cpu)")"
printf '| %-28s | %12s | %21s | %22s |\n' "peak RSS (MiB, VmHWM)" "$(r rearguard_rss)" "$(r prometheus_rss)" "$(ratio "$(r rearguard_rss)" "$(r prometheus_rss)")"
printf '| %-28s | %12s | %21s | %22s |\n' "failure to alert, mean (s)" "$(r rearguard_latency)" "$(r prometheus_latency)" "$(ratio "$(r rearguard_latency)" "$(r prometheus_latency)")"
printf '| %-28s | %12s | %21s | %22s |\n' "failure to alert, each (s)" "$(r rearguard_latencies)" "$(r prometheus_latencies)" ""
printf '| %-28s | %12s | %21s | %22s |\n' "samples appended in window" "$(r rearguard_appended)" "$(r prometheus_appended)" ""
printf '| %-28s | %12s | %21s | %22s |\n' "RSS growth in window (MiB)" "$(r rearguard_rss_growth)" "$(r prometheus_rss_growth)" ""
printf '| %-28s | %12s | %21s | %22s |\n' "RSS growth / sample (bytes)" "$(r rearguard_per_sample)" "$(r prometheus_per_sample)" "$(ratio "$(r rearguard_per_sample)" "$(r prometheus_per_sample)")"
printf '| %-28s | %12s | %21s | %22s |\n' "  second half of window only" "$(r rearguard_second_half)" "$(r prometheus_second_half)" "$(ratio "$(r rearguard_second_half)" "$(r prometheus_second_half)")"
printf '| %-28s | %12s | %21s | %22s |\n' "open sockets at end" "$(r rearguard_sockets)" "$(r prometheus_sockets)" ""
printf '| %-28s | %12s | %21s | %22s |\n' "probes run in window" "$(r rearguard_probes)" "$(r prometheus_probes)" ""
printf '| %-28s | %12s | %21s | %22s |\n' "probes that succeeded (%)" "$(r rearguard_ok)" "$(r prometheus_ok)" ""
printf '| %-28s | %12s | %21s | %22s |\n' "window measured (s)" "$(r rearguard_secs)" "$(r prometheus_secs)" ""
printf '| %-28s | %12s | %21s | %22s |\n' "alerts firing at end"  "$(r rearguard_firing)" "$(r prometheus_firing)" ""

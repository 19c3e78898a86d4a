#!/usr/bin/env python3
"""Side-by-side with Debian's `prometheus`: the same series and rules as
bench/rules.rs, loaded into Prometheus with `promtool tsdb create-blocks-from
openmetrics`, then one rule group of all rules evaluated by Prometheus.

usage: bench/prometheus_compare.py SERIES RULES MINUTES WORKDIR
Prints Prometheus's rule-group evaluation time and its RSS; compare with
`BENCH_SERIES=SERIES BENCH_RULES=RULES BENCH_MINUTES=MINUTES cargo bench --bench rules`.
"""
import os
import subprocess
import sys
import time
import urllib.request

series, rules, minutes, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
metrics, jobs, step = 100, 10, 10
per_metric = series // metrics
scrapes = minutes * 6
os.makedirs(work, exist_ok=True)
end = int(time.time()) // step * step
start = end - (scrapes - 1) * step

om = os.path.join(work, "data.om")
with open(om, "w") as f:
    for m in range(metrics):
        f.write(f"# TYPE metric_{m} counter\n")
        for i in range(per_metric):
            labels = f'instance="instance-{i}",job="job-{i % jobs}",region="region-{i % 3}"'
            for s in range(scrapes):
                f.write(f"metric_{m}_total{{{labels}}} {s * (1 + (m * per_metric + i) % 7)} {start + s * step}\n")
    f.write("# EOF\n")

shapes = [
    'rate(metric_{m}_total{{job="job-{j}"}}[5m]) > 1000',
    'sum by (job) (rate(metric_{m}_total[5m])) > 1e9',
    'sum by (job) (rate(metric_{m}_total{{region="region-1"}}[5m])) / sum by (job) (rate(metric_{m}_total[5m])) > 0.5',
    'avg_over_time(metric_{m}_total{{instance=~"instance-{j}.*"}}[10m]) < 0',
    'increase(metric_{m}_total{{job="job-{j}"}}[15m]) == 0',
    'absent(metric_{m}_total{{job="job-{j}"}})',
    'max by (instance) (deriv(metric_{m}_total{{job="job-{j}"}}[30m])) > 100',
    'count by (region) (metric_{m}_total) < 10',
    'quantile(0.95, rate(metric_{m}_total{{job="job-{j}"}}[5m])) > 50',
    'metric_{m}_total{{job="job-{j}"}} offset 5m > 1e12',
]
with open(os.path.join(work, "rules.yml"), "w") as f:
    f.write("groups:\n- name: bench\n  interval: 15s\n  rules:\n")
    for i in range(rules):
        expr = shapes[i % len(shapes)].format(m=(i // len(shapes)) % metrics, j=i % jobs)
        f.write(f"  - alert: A{i}\n    expr: '{expr}'\n")
with open(os.path.join(work, "prometheus.yml"), "w") as f:
    f.write("global:\n  evaluation_interval: 15s\nrule_files: [rules.yml]\n")

data = os.path.join(work, "tsdb")
subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, data], check=True,
               stdout=subprocess.DEVNULL)
os.remove(om)
proc = subprocess.Popen(["prometheus", f"--config.file={work}/prometheus.yml",
                         f"--storage.tsdb.path={data}", "--web.listen-address=127.0.0.1:19099",
                         "--storage.tsdb.retention.time=30d"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
try:
    durations = []
    for _ in range(40):
        time.sleep(5)
        try:
            body = urllib.request.urlopen("http://127.0.0.1:19099/metrics").read().decode()
        except OSError:
            continue
        for line in body.splitlines():
            if line.startswith("prometheus_rule_group_last_duration_seconds{"):
                durations.append(float(line.split()[-1]))
            if line.startswith("process_resident_memory_bytes"):
                rss = float(line.split()[-1])
        if len([d for d in durations if d > 0]) >= 3:
            break
    good = [d for d in durations if d > 0]
    print(f"prometheus rule group ({rules} rules): last durations {good} s; best {min(good):.4f} s")
    print(f"prometheus RSS: {rss / 1048576:.1f} MiB")
finally:
    proc.terminate()
    proc.wait()

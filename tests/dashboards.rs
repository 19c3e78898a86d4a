//! The Grafana dashboards and the metrics reference stay true to the code:
//! every query in `dashboards/*.json` parses as PromQL and names only metrics
//! rearguard exports on /metrics; docs/metrics.md lists exactly what a running
//! daemon's registry exports (with the right types and labels), and every
//! name in it still occurs in src/.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prometheus::proto::MetricType;
use promql_parser::parser::Expr;
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One row of a table in docs/metrics.md.
#[derive(Debug, Clone)]
struct DocMetric {
    kind: String,
    labels: BTreeSet<String>,
    line: usize,
}

/// The two parts of docs/metrics.md: what /metrics exports and what only the tsdb holds.
#[derive(Debug, Default)]
struct Reference {
    exported: BTreeMap<String, DocMetric>,
    tsdb: BTreeMap<String, DocMetric>,
}

/// The backticked words of a table cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn read_reference() -> Reference {
    let path = Path::new(ROOT).join("docs/metrics.md");
    let text = std::fs::read_to_string(&path).expect("docs/metrics.md exists");
    let mut r = Reference::default();
    let mut section: Option<bool> = None; // Some(true): exported, Some(false): tsdb
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            section = if h.starts_with("Exported on /metrics") {
                Some(true)
            } else if h.starts_with("Series in the tsdb") {
                Some(false)
            } else {
                None
            };
            continue;
        }
        let Some(exported) = section else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | `labels` | meaning | component |
        if cells.len() < 6 || !cells[1].starts_with('`') {
            continue;
        }
        let names = backticked(cells[1]);
        assert_eq!(
            names.len(),
            1,
            "docs/metrics.md:{}: one metric name per row",
            i + 1
        );
        let m = DocMetric {
            kind: cells[2].to_string(),
            labels: backticked(cells[3]).into_iter().collect(),
            line: i + 1,
        };
        assert!(
            ["counter", "gauge", "histogram"].contains(&m.kind.as_str()),
            "docs/metrics.md:{}: type {:?} is not counter, gauge or histogram",
            m.line,
            m.kind
        );
        let table = if exported {
            &mut r.exported
        } else {
            &mut r.tsdb
        };
        assert!(
            table.insert(names[0].clone(), m).is_none(),
            "docs/metrics.md:{}: {} listed twice",
            i + 1,
            names[0]
        );
    }
    assert!(
        r.exported.len() >= 30,
        "docs/metrics.md: expected the exported tables, found {} rows",
        r.exported.len()
    );
    assert!(!r.tsdb.is_empty(), "docs/metrics.md: no tsdb series found");
    r
}

fn rust_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// The process collector's metrics come from the prometheus crate, not src/.
fn from_prometheus_crate(name: &str) -> bool {
    name.starts_with("process_")
}

#[test]
fn every_documented_name_occurs_in_the_source() {
    let r = read_reference();
    let mut src = String::new();
    rust_sources(&Path::new(ROOT).join("src"), &mut src);
    let missing: Vec<String> = r
        .exported
        .iter()
        .chain(r.tsdb.iter())
        .filter(|(name, _)| !from_prometheus_crate(name))
        .filter(|(name, _)| !src.contains(&format!("\"{name}\"")))
        .map(|(name, m)| format!("docs/metrics.md:{}: {name}", m.line))
        .collect();
    assert!(
        missing.is_empty(),
        "names in docs/metrics.md that no string literal in src/ has (renamed or removed? update the reference):\n{}",
        missing.join("\n")
    );
}

// ---------------------------------------------------------------- the daemon

/// A webhook sink that answers 200 to everything.
async fn webhook_sink() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    port
}

fn type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

/// Starts a daemon with a probe, a firing rule and a webhook receiver, waits
/// until the families that need a probe run and a rule evaluation show up,
/// and returns what its registry gathers.
async fn gather_from_daemon() -> Vec<prometheus::proto::MetricFamily> {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hook = webhook_sink().await;
    std::fs::write(
        dir.path().join("rules.yaml"),
        "groups:\n  - name: always\n    interval: 1s\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n        labels:\n          severity: info\n      - record: probe:success:avg\n        expr: avg(probe_success)\n",
    )
    .unwrap();
    let text = format!(
        "listen: 127.0.0.1:{port}\nstate_dir: {state}\nevaluation_interval: 1s\nprobes:\n  - name: self\n    url: http://127.0.0.1:{port}/healthz\n    interval: 1s\n    timeout: 1s\nrule_files: [rules.yaml]\nroute:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{hook}/hook\n",
        state = dir.path().join("state").display()
    );
    let cfg_path = dir.path().join("rearguard.yaml");
    std::fs::write(&cfg_path, &text).unwrap();
    let loaded = rearguard::config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
    let daemon =
        rearguard::daemon::Daemon::start(loaded, rearguard::clock::Clock::system(), Some(listener))
            .await
            .unwrap_or_else(|e| panic!("daemon did not start: {e}"));

    let wanted = [
        "probe_success",
        "rearguard_probe_runs_total",
        "rearguard_rule_evaluations_total",
        "rearguard_alerts",
        "rearguard_build_info",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let families = loop {
        let families = daemon.registry().gather();
        let names: BTreeSet<&str> = families.iter().map(|f| f.name()).collect();
        let missing: Vec<&&str> = wanted.iter().filter(|w| !names.contains(**w)).collect();
        if missing.is_empty() {
            // A little longer, so the notification path can show up too.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            break daemon.registry().gather();
        }
        assert!(
            Instant::now() < deadline,
            "the daemon's registry never exported {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemon.shutdown().await;
    families
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_matches_what_a_running_daemon_exports() {
    let r = read_reference();
    let families = gather_from_daemon().await;
    let mut problems = Vec::new();
    for f in &families {
        let name = f.name();
        let Some(doc) = r.exported.get(name) else {
            problems.push(format!(
                "{name} ({}) is exported but not in docs/metrics.md",
                type_name(f.get_field_type())
            ));
            continue;
        };
        let actual = type_name(f.get_field_type());
        if doc.kind != actual {
            problems.push(format!(
                "docs/metrics.md:{}: {name} is a {actual}, the reference says {}",
                doc.line, doc.kind
            ));
        }
        let labels: BTreeSet<String> = f
            .get_metric()
            .iter()
            .flat_map(|m| m.get_label().iter().map(|l| l.name().to_string()))
            .collect();
        let undocumented: Vec<&String> = labels.difference(&doc.labels).collect();
        if !undocumented.is_empty() {
            problems.push(format!(
                "docs/metrics.md:{}: {name} has labels {undocumented:?} the reference does not list",
                doc.line
            ));
        }
    }
    let gathered: BTreeSet<&str> = families.iter().map(|f| f.name()).collect();
    for name in r.exported.keys().filter(|n| from_prometheus_crate(n)) {
        if cfg!(target_os = "linux") && !gathered.contains(name.as_str()) {
            problems.push(format!(
                "{name} is documented as a process metric but not exported"
            ));
        }
    }
    // Probe series are both exported and in the tsdb: one type for both.
    for (name, doc) in &r.tsdb {
        if let Some(e) = r.exported.get(name) {
            if e.kind != doc.kind {
                problems.push(format!(
                    "docs/metrics.md:{}: {name} has another type than on line {}",
                    doc.line, e.line
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------- dashboards

fn dashboard_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards/*.json");
    files
}

/// Grafana's variables replaced by values that keep the query valid PromQL.
fn substitute_variables(expr: &str) -> String {
    let re_builtin = regex::Regex::new(r"\$\{?__(rate_interval|interval|range)\}?").unwrap();
    let re_var = regex::Regex::new(r"\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*").unwrap();
    let s = re_builtin.replace_all(expr, "5m");
    re_var.replace_all(&s, "x").into_owned()
}

#[derive(Default)]
struct MetricNames(BTreeSet<String>);

impl ExprVisitor for MetricNames {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let vs = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let name = vs.name.clone().or_else(|| {
            vs.matchers
                .matchers
                .iter()
                .find(|m| m.name == "__name__")
                .map(|m| m.value.clone())
        });
        match name {
            Some(n) => {
                self.0.insert(n);
                Ok(true)
            }
            None => Err(format!("selector {vs} names no metric")),
        }
    }
}

/// A query of a dashboard: where it is and its text.
struct Query {
    at: String,
    expr: String,
}

/// The datasource of a panel or target must be the `datasource` variable.
fn check_datasource(at: &str, ds: Option<&Value>, problems: &mut Vec<String>) {
    match ds {
        None => problems.push(format!("{at}: no datasource")),
        Some(Value::Object(o)) => {
            if o.get("uid").and_then(Value::as_str) != Some("${datasource}") {
                problems.push(format!(
                    "{at}: datasource uid is not ${{datasource}}: {ds:?}"
                ));
            }
        }
        Some(Value::String(s)) if s == "${datasource}" => {}
        Some(other) => problems.push(format!("{at}: datasource {other} is not ${{datasource}}")),
    }
}

fn collect_panels(panels: &[Value], at: &str, out: &mut Vec<Query>, problems: &mut Vec<String>) {
    for p in panels {
        let title = p.get("title").and_then(Value::as_str).unwrap_or("?");
        let here = format!("{at} panel {title:?}");
        if let Some(children) = p.get("panels").and_then(Value::as_array) {
            collect_panels(children, &here, out, problems);
        }
        if p.get("type").and_then(Value::as_str) == Some("row") {
            continue;
        }
        let targets = p.get("targets").and_then(Value::as_array);
        if p.get("type").and_then(Value::as_str) == Some("text") {
            continue;
        }
        check_datasource(&here, p.get("datasource"), problems);
        let Some(targets) = targets.filter(|t| !t.is_empty()) else {
            problems.push(format!("{here}: no targets"));
            continue;
        };
        for t in targets {
            let r = t.get("refId").and_then(Value::as_str).unwrap_or("?");
            check_datasource(&format!("{here} target {r}"), t.get("datasource"), problems);
            match t.get("expr").and_then(Value::as_str) {
                Some(e) => out.push(Query {
                    at: format!("{here} target {r}"),
                    expr: e.to_string(),
                }),
                None => problems.push(format!("{here} target {r}: no expr")),
            }
        }
    }
}

/// Every PromQL query of a dashboard (panels, annotations, variables).
fn dashboard_queries(file: &Path, d: &Value, problems: &mut Vec<String>) -> Vec<Query> {
    let f = file.file_name().unwrap().to_string_lossy().to_string();
    let mut out = Vec::new();
    let panels = d.get("panels").and_then(Value::as_array);
    match panels {
        Some(p) if !p.is_empty() => collect_panels(p, &f, &mut out, problems),
        _ => problems.push(format!("{f}: no panels")),
    }
    for a in d
        .pointer("/annotations/list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = a.get("name").and_then(Value::as_str).unwrap_or("?");
        let at = format!("{f} annotation {name:?}");
        check_datasource(&at, a.get("datasource"), problems);
        match a.get("expr").and_then(Value::as_str) {
            Some(e) => out.push(Query {
                at,
                expr: e.to_string(),
            }),
            None => problems.push(format!("{at}: no expr")),
        }
    }
    let rollback_annotation = d
        .pointer("/annotations/list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("expr").and_then(Value::as_str))
        .any(|e| e.contains("rearguard_rollbacks_total"));
    if !rollback_annotation {
        problems.push(format!(
            "{f}: no annotation shows rollbacks (rearguard_rollbacks_total)"
        ));
    }
    let label_values =
        regex::Regex::new(r"^\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*$").unwrap();
    let mut has_datasource_var = false;
    for v in d
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
        let at = format!("{f} variable {name:?}");
        match v.get("type").and_then(Value::as_str) {
            Some("datasource")
                if name == "datasource"
                    && v.get("query").and_then(Value::as_str) == Some("prometheus") =>
            {
                has_datasource_var = true;
            }
            Some("query") => {
                check_datasource(&at, v.get("datasource"), problems);
                let q = v
                    .get("query")
                    .and_then(|q| {
                        q.as_str()
                            .or_else(|| q.get("query").and_then(Value::as_str))
                    })
                    .unwrap_or("");
                match label_values.captures(q) {
                    Some(c) => out.push(Query {
                        at,
                        expr: c[1].to_string(),
                    }),
                    None => problems.push(format!(
                        "{at}: query {q:?} is not label_values(<selector>, <label>)"
                    )),
                }
            }
            _ => {}
        }
    }
    if !has_datasource_var {
        problems.push(format!(
            "{f}: no `datasource` variable of type datasource with query prometheus"
        ));
    }
    out
}

/// Every `uid` value inside `v`, with the path that leads to it.
fn nested_uids(at: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if k == "uid" {
                    out.push((
                        at.to_string(),
                        child.to_string().trim_matches('"').to_string(),
                    ));
                } else {
                    nested_uids(&format!("{at}.{k}"), child, out);
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                nested_uids(&format!("{at}[{i}]"), child, out);
            }
        }
        _ => {}
    }
}

/// A dashboard metric name as the reference lists it: histogram series map to the base name.
fn reference_name<'a>(name: &'a str, r: &Reference) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if r.exported.get(base).is_some_and(|m| m.kind == "histogram") {
                return base;
            }
        }
    }
    name
}

#[test]
fn every_dashboard_query_parses_and_uses_exported_metrics() {
    let r = read_reference();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for file in dashboard_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let d: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
        if !text.contains("\"${datasource}\"") {
            problems.push(format!("{}: never uses ${{datasource}}", file.display()));
        }
        // No hard-coded datasource: every uid below the dashboard's own is the variable.
        let mut uids = Vec::new();
        if let Value::Object(o) = &d {
            for (k, v) in o.iter().filter(|(k, _)| *k != "uid") {
                nested_uids(k, v, &mut uids);
            }
        }
        for (at, uid) in uids.into_iter().filter(|(_, u)| u != "${datasource}") {
            problems.push(format!(
                "{}: hard-coded uid {uid:?} at {at}",
                file.display()
            ));
        }
        let schema = d.get("schemaVersion").and_then(Value::as_i64).unwrap_or(0);
        if !(36..=41).contains(&schema) {
            problems.push(format!(
                "{}: schemaVersion {schema} is not one Grafana 10/11 writes",
                file.display()
            ));
        }
        for q in dashboard_queries(&file, &d, &mut problems) {
            let expr = substitute_variables(&q.expr);
            let parsed = match promql_parser::parser::parse(&expr) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{}: {:?} does not parse: {e}", q.at, q.expr));
                    continue;
                }
            };
            let mut names = MetricNames::default();
            if let Err(e) = walk_expr(&mut names, &parsed) {
                problems.push(format!("{}: {e}", q.at));
            }
            for n in names.0 {
                let base = reference_name(&n, &r);
                if !r.exported.contains_key(base) {
                    problems.push(format!(
                        "{}: {n} is not a metric rearguard exports (docs/metrics.md, exported tables)",
                        q.at
                    ));
                }
                used.insert(base.to_string());
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dashboards cover what the issue asks for.
    for needed in [
        "probe_success",
        "probe_duration_seconds",
        "rearguard_alerts",
        "rearguard_rule_evaluation_duration_seconds",
        "rearguard_rule_evaluation_failures_total",
        "rearguard_rule_group_iterations_missed_total",
        "rearguard_notifications_total",
        "rearguard_notification_queue_depth",
        "rearguard_notification_latency_seconds",
        "rearguard_notifications_dead_lettered_total",
        "rearguard_rollbacks_total",
        "rearguard_rollback_skipped_total",
        "rearguard_target_held",
        "rearguard_upstream_requests_total",
        "rearguard_upstream_request_duration_seconds",
    ] {
        assert!(used.contains(needed), "no dashboard shows {needed}");
    }
}

#[test]
fn variable_substitution_keeps_queries_parseable() {
    let e = substitute_variables(
        r#"sum by (probe) (rate(rearguard_probe_runs_total{probe=~"$probe",x="${target:regex}"}[$__rate_interval]))"#,
    );
    assert_eq!(
        e,
        r#"sum by (probe) (rate(rearguard_probe_runs_total{probe=~"x",x="x"}[5m]))"#
    );
    assert!(promql_parser::parser::parse(&e).is_ok());
}

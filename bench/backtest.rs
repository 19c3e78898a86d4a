//! `cargo bench --bench backtest`: the replay of six weeks of one Cloud Run
//! service's rules, once the history is read (no network: the history is
//! built here as `backtest::history` would have read it).
//!
//! The service serves 100 requests a minute; it is deployed once a day, and
//! every seventh deploy is bad (20% 5xx) until a person rolls it back 30
//! minutes later. Rules: a per-revision error ratio (a recording rule and an
//! alert with `for: 2m`), a service-wide error ratio over 30m, and a traffic
//! drop, every group at 1m. `BENCH_DAYS` changes the window (default 42).

use std::time::Instant;

use rearguard::action::{RevisionState, ServingPeriod};
use rearguard::backtest::{replay, DecisionKind, History, ReplayOptions, ServiceHistory};
use rearguard::gcp::audit::ServiceChange;
use rearguard::labels::{Labels, Sample, METRIC_NAME};
use rearguard::rules::manager::RulesConfig;

const MIN: i64 = 60_000;
const DAY: i64 = 24 * 60 * MIN;
const START: i64 = 1_790_000_000_000;

const RULES: &str = r#"groups:
  - name: api
    interval: 1m
    rules:
      - record: revision:error_ratio:rate5m
        expr: |
          sum by (service_name, revision_name) (rate(run_googleapis_com:request_count{response_code_class="5xx"}[5m]))
            / sum by (service_name, revision_name) (rate(run_googleapis_com:request_count[5m]))
      - alert: ApiErrorRate
        expr: revision:error_ratio:rate5m > 0.05
        for: 2m
        labels: { severity: critical }
      - alert: ApiErrorBudgetBurn
        expr: |
          sum by (service_name) (increase(run_googleapis_com:request_count{response_code_class="5xx"}[30m]))
            / sum by (service_name) (increase(run_googleapis_com:request_count[30m])) > 0.1
        for: 5m
        labels: { severity: warning }
      - alert: ApiTrafficDrop
        expr: sum by (service_name) (rate(run_googleapis_com:request_count[10m])) < 0.5
        for: 10m
        labels: { severity: warning }
"#;

fn config(dir: &std::path::Path) -> String {
    format!(
        r#"state_dir: {}
evaluation_interval: 1m
gcp: {{ project: p }}
cloud_monitoring:
  - name: requests
    metric: run.googleapis.com/request_count
    interval: 60s
rule_files: [rules.yaml]
route:
  receiver: team
  group_by: [alertname, service_name]
  routes:
    - matchers: ['severity="critical"']
      receiver: rollback-api
receivers:
  - name: team
  - name: rollback-api
    rollback_configs: [{{ action: api }}]
actions:
  api:
    cloud_run_traffic: {{ service: projects/p/locations/europe-west1/services/api }}
"#,
        dir.join("state").display()
    )
}

fn counter(revision: &str, class: &str) -> Labels {
    Labels::from_pairs([
        (METRIC_NAME, "run_googleapis_com:request_count"),
        ("monitored_resource", "cloud_run_revision"),
        ("project_id", "p"),
        ("location", "europe-west1"),
        ("service_name", "api"),
        ("revision_name", revision),
        ("response_code_class", class),
    ])
}

/// Six weeks as the history reader would return them.
fn history(days: i64) -> History {
    let mut samples = Vec::new();
    let mut revisions = vec![RevisionState {
        name: "api-00000-aaa".into(),
        create_time_ms: START - DAY,
        ready: true,
    }];
    let mut changes = Vec::new();
    let mut serving = "api-00000-aaa".to_string();
    let mut good = serving.clone();
    let mut totals: std::collections::HashMap<(String, &str), f64> = Default::default();
    let mut t = START;
    while t < START + days * DAY {
        let day = (t - START) / DAY;
        let in_day = (t - START) % DAY;
        if in_day == 10 * 60 * MIN {
            let name = format!("api-{:05}-abc", day + 1);
            revisions.push(RevisionState {
                name: name.clone(),
                create_time_ms: t,
                ready: true,
            });
            changes.push(ServiceChange {
                at_ms: t + 20_000,
                method: "google.cloud.run.v2.Services.UpdateService".into(),
                actor: Some("dev@example.com".into()),
                serving: vec![(name.clone(), 100)],
                latest_ready: Some(name.clone()),
            });
            serving = name;
        }
        let bad = day % 7 == 3 && in_day >= 10 * 60 * MIN;
        if bad && in_day == 10 * 60 * MIN + 30 * MIN {
            changes.push(ServiceChange {
                at_ms: t,
                method: "google.cloud.run.v1.Services.ReplaceService".into(),
                actor: Some("oncall@example.com".into()),
                serving: vec![(good.clone(), 100)],
                latest_ready: Some(serving.clone()),
            });
            serving = good.clone();
        }
        let errors = if bad && serving != good { 20.0 } else { 0.0 };
        for (class, n) in [("2xx", 100.0 - errors), ("5xx", errors)] {
            let total = totals.entry((serving.clone(), class)).or_insert(0.0);
            *total += n;
            samples.push(Sample {
                labels: counter(&serving, class),
                timestamp_ms: t,
                value: *total,
            });
        }
        if !bad && in_day == 23 * 60 * MIN {
            good = serving.clone();
        }
        t += MIN;
    }
    let services = std::collections::BTreeMap::from([(
        "projects/p/locations/europe-west1/services/api".to_string(),
        ServiceHistory {
            initial: Some(ServingPeriod {
                revision: "api-00000-aaa".into(),
                since_ms: START - DAY,
            }),
            changes,
            revisions,
        },
    )]);
    History {
        samples,
        visible_at: Vec::new(),
        services,
    }
}

fn main() {
    let days: i64 = std::env::var("BENCH_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(42);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rules.yaml"), RULES).expect("rules");
    let path = dir.path().join("rearguard.yaml");
    std::fs::write(&path, config(dir.path())).expect("config");
    let loaded = rearguard::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let files = RulesConfig::from_loaded(&loaded)
        .unwrap_or_else(|_| panic!("rules"))
        .files;
    let built = Instant::now();
    let h = history(days);
    println!(
        "history: {days} days, {} samples, {} changes (built in {:.2} s)",
        h.samples.len(),
        h.services.values().map(|s| s.changes.len()).sum::<usize>(),
        built.elapsed().as_secs_f64()
    );
    let opts = ReplayOptions {
        from_ms: START + 60 * MIN,
        to_ms: START + days * DAY,
        step: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let result = rt.block_on(replay(&loaded.config, &files, &h, &opts, &mut |_| {}));
    let secs = started.elapsed().as_secs_f64();
    let acted = result
        .decisions()
        .filter(|d| d.decision == DecisionKind::WouldRollBack)
        .count();
    println!(
        "replay: {} rule-group evaluations, {} events, {} decisions ({acted} would_roll_back) in {secs:.2} s",
        result.evaluations,
        result.events.len(),
        result.decisions().count()
    );
}

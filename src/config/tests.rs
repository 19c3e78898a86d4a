use super::*;

fn load_text(text: &str) -> Result<LoadedConfig, LocatedErrors> {
    load_str(Path::new("/tmp/rg-test/rearguard.yaml"), text, |n| {
        (n == "TOKEN").then(|| "s3cr3t-value".to_string())
    })
}

#[test]
fn empty_config_gets_defaults() {
    let c = load_text("").unwrap().config;
    assert_eq!(c.listen, defaults::listen());
    assert_eq!(c.evaluation_interval, defaults::EVALUATION_INTERVAL);
    assert!(c.probes.is_empty());
}

#[test]
fn unknown_key_is_located() {
    let err = load_text(
        "listen: 127.0.0.1:1\nprobes:\n  - name: a\n    url: http://x/\n    intervall: 5s\n",
    )
    .unwrap_err();
    let e = &err.0[0];
    assert_eq!(e.pos.line, 5, "{e}");
    assert!(e.message.contains("unknown field `intervall`"), "{e}");
    assert!(
        e.to_string().starts_with("/tmp/rg-test/rearguard.yaml:5:"),
        "{e}"
    );
}

#[test]
fn every_semantic_error_is_listed() {
    let err = load_text(
        "probes:\n  - name: a\n    url: ftp://x/\n  - name: a\n    url: http://ok/\n    timeout: 30s\n    interval: 10s\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    assert!(text.contains(":3:10: invalid url"), "{text}");
    assert!(text.contains(":4:11: duplicate probe name"), "{text}");
    assert!(text.contains(":6:14: timeout 30s is longer"), "{text}");
}

#[test]
fn bad_duration_is_located() {
    let err = load_text("evaluation_interval: 15 seconds\n").unwrap_err();
    assert_eq!(err.0[0].pos.line, 1);
    assert!(err.0[0].message.contains("not a valid duration"), "{}", err);
}

#[test]
fn missing_env_and_secret_file() {
    let err =
        load_text("admin:\n  token_file: /nonexistent/token\nexternal_url: ${NOPE}\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(":3:15: environment variable NOPE is not set"),
        "{text}"
    );
    assert!(
        text.contains(":2:15: cannot read secret file /nonexistent/token"),
        "{text}"
    );
}

#[test]
fn expanded_secrets_are_redacted_from_errors() {
    let err = load_text("listen: ${TOKEN}\n").unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("s3cr3t-value"), "{text}");
}

#[test]
fn design_example_parses() {
    // The config example of DESIGN.md, minus files that do not exist here.
    let text = r#"
listen: 127.0.0.1:9464
state_dir: ./state
evaluation_interval: 15s
external_url: http://rearguard.staging.internal:9464
gcp:
  project: netra-staging
  credentials: adc
  endpoints:
    run: https://run.googleapis.com
    monitoring: https://monitoring.googleapis.com
    logging: https://logging.googleapis.com
probes:
  - name: backend-health
    url: https://backend.example.run.app/health
    interval: 10s
    timeout: 5s
    expect:
      status: [200]
      body_contains: '"status":"healthy"'
      max_duration: 2s
    labels: { service: netra-backend-staging }
cloud_monitoring:
  - name: run-requests
    metric: run.googleapis.com/request_count
    filter: resource.labels.service_name = "netra-backend-staging"
    interval: 60s
cloud_logging:
  - name: backend-errors
    filter: resource.type="cloud_run_revision" AND severity>=ERROR
    interval: 30s
cloud_run:
  - service: projects/netra-staging/locations/us-central1/services/netra-backend-staging
    interval: 30s
query_sources:
  gmp: { type: cloud_monitoring_promql }
  prom: { type: prometheus, url: http://prometheus:9090 }
route:
  receiver: team
  group_by: [alertname, service]
  routes:
    - matchers: ['severity="critical"', 'service="netra-backend-staging"']
      receiver: rollback-backend
      continue: true
receivers:
  - name: team
    webhook_configs:
      - url: https://hooks.example.com/rearguard
  - name: rollback-backend
    rollback_configs:
      - action: backend
actions:
  backend:
    cloud_run_traffic:
      service: projects/netra-staging/locations/us-central1/services/netra-backend-staging
    verify:
      probes: [backend-health]
      backoff: [2s, 4s, 8s, 16s, 32s]
    cooldown: 30m
    max_per_window: { count: 2, window: 24h }
    bake_window: 2h
    dry_run: false
"#;
    let c = load_text(text).unwrap().config;
    assert_eq!(c.probes[0].expect.status, vec![200]);
    assert_eq!(c.actions["backend"].bake_window, Dur::secs(7200));
}

#[test]
fn probe_timeout_defaults_to_interval_when_shorter() {
    let c = load_text("probes:\n  - name: a\n    url: http://x/\n    interval: 1s\n  - name: b\n    url: http://y/\n")
        .unwrap()
        .config;
    assert_eq!(c.probes[0].timeout(), Dur::secs(1));
    assert_eq!(c.probes[1].timeout(), defaults::PROBE_TIMEOUT);
}

#[test]
fn tsdb_flush_interval_defaults_to_a_second_and_is_bounded() {
    let c = load_text("").unwrap().config;
    assert_eq!(c.tsdb_flush_interval, defaults::TSDB_FLUSH_INTERVAL);
    assert_eq!(c.tsdb_flush_interval.0, std::time::Duration::from_secs(1));
    for ok in ["100ms", "500ms", "2s", "1m"] {
        let c = load_text(&format!("tsdb_flush_interval: {ok}\n"))
            .unwrap_or_else(|e| panic!("{ok}: {e}"))
            .config;
        assert_eq!(c.tsdb_flush_interval.to_string(), ok);
    }
    for bad in ["99ms", "0", "1m1s", "1h"] {
        let err = load_text(&format!("retention: 6h\ntsdb_flush_interval: {bad}\n")).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 1, "{text}");
        assert!(
            text.starts_with("/tmp/rg-test/rearguard.yaml:2:22: tsdb_flush_interval"),
            "{text}"
        );
        assert!(text.contains("between 100ms and 1m"), "{text}");
    }
}

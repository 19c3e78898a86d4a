//! The shipped rules and examples are right: examples/cloud-run-staging.yaml
//! and rules/ against a simulated Cloud Run service (real HTTP, its requests,
//! latencies and memory in the fake's Monitoring, its errors in Logging) into
//! which a bad, leaking revision is deployed. Rule by rule: every critical
//! rule's alerts carry `service` and reach the rollback route, every
//! annotation renders without empty holes, and the example's inhibit rules
//! name alerts that exist.

mod example_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use example_support::{Pipeline, MIN, T0};
use rearguard::action::AlertState;
use rearguard::adapters::{metric_lags, RulesAlertState};
use rearguard::alert::Alert;
use rearguard::rules::file::RuleKind;
use rearguard_sim::service::{SimService, SimServiceOptions};
use rearguard_sim::{DeploySpec, RevisionBehaviour};

/// The label names a template reads as `$labels.NAME`.
fn labels_read(template: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = template;
    while let Some(i) = rest.find("$labels.") {
        rest = &rest[i + "$labels.".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// Holes a template leaves when a label or value is missing.
fn holes(text: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (hole, what) in [
        ("<no value>", "<no value>"),
        ("  ", "a doubled space"),
        (" of  ", "an empty name"),
        ("revision  ", "an empty revision"),
        (" : ", "an empty name before a colon"),
    ] {
        if text.contains(hole) {
            out.push(what);
        }
    }
    if text.trim().is_empty() {
        out.push("empty text");
    }
    if text.starts_with(':') || text.starts_with(' ') {
        out.push("an empty name at the start");
    }
    out
}

#[tokio::test(start_paused = true)]
async fn every_critical_rule_reaches_the_rollback_route_with_service_and_full_text() {
    let (clock, fake, service) = Pipeline::fake().await;
    let sim = SimService::start(&fake, &service, SimServiceOptions::default())
        .await
        .unwrap();
    let p = Pipeline::start(clock.clone(), fake.clone(), service.clone(), &sim.url()).await;

    // Ten healthy minutes.
    clock.sleep_until_ms(T0 + 10 * MIN).await;
    assert!(
        p.notifications().is_empty(),
        "a healthy service raised alerts: {:#?}",
        p.notifications()
    );

    // A bad revision that also leaks memory (2 points an hour... a minute).
    let mut behaviour = RevisionBehaviour {
        memory_utilization: 0.30,
        ..RevisionBehaviour::bad()
    };
    let (revision, _) = fake
        .deploy(
            &service,
            DeploySpec {
                behaviour: behaviour.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    fake.settle().await;
    let deployed = clock.now_ms();
    while clock.now_ms() < deployed + 70 * MIN {
        tokio::time::sleep(Duration::from_secs(60)).await;
        behaviour.memory_utilization = (behaviour.memory_utilization + 0.005).min(0.95);
        fake.set_revision_behaviour(&revision, behaviour.clone())
            .unwrap();
    }
    let notifications = p.notifications();

    let files =
        rearguard::rules::load_rule_files(&p.loaded.rule_file_paths, Default::default()).unwrap();
    let mut annotations_of: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut critical = Vec::new();
    for f in &files {
        for g in &f.groups {
            for r in &g.rules {
                if let RuleKind::Alerting {
                    alert, annotations, ..
                } = &r.kind
                {
                    annotations_of.insert(alert.clone(), annotations.clone());
                    if r.labels.get("severity").map(String::as_str) == Some("critical") {
                        critical.push(alert.clone());
                    }
                }
            }
        }
    }
    assert!(critical.len() >= 3, "{critical:?}");

    let short = service.rsplit('/').next().unwrap().to_string();
    let bad_revision = revision.rsplit('/').next().unwrap().to_string();
    for name in &critical {
        let to_rollback: Vec<&Alert> = notifications
            .iter()
            .filter(|(_, n)| n.receiver == "rollback-backend")
            .flat_map(|(_, n)| n.alerts.iter())
            .filter(|a| a.name() == name)
            .collect();
        assert!(
            !to_rollback.is_empty(),
            "{name}: never reached the rollback route; got {:?}",
            notifications
                .iter()
                .map(|(_, n)| (
                    n.receiver.clone(),
                    n.alerts
                        .iter()
                        .map(|a| a.name().to_string())
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
        for a in to_rollback {
            assert_eq!(
                a.labels.get("service"),
                Some(short.as_str()),
                "{name}: {a:?}"
            );
            // Per-revision evidence names the revision that is bad.
            if let Some(r) = a.labels.get("revision_name") {
                assert_eq!(r, bad_revision, "{name}: {a:?}");
            }
        }
    }

    // Every alert that reached anyone: what its templates read is there, and
    // the text has no holes.
    let mut seen = BTreeSet::new();
    for (_, n) in &notifications {
        for a in &n.alerts {
            seen.insert(a.name().to_string());
            let Some(templates) = annotations_of.get(a.name()) else {
                continue;
            };
            for (key, template) in templates {
                for label in labels_read(template) {
                    assert!(
                        a.labels.get(&label).is_some_and(|v| !v.is_empty()),
                        "{}: annotation {key} reads $labels.{label}, which the alert lacks: {a:?}",
                        a.name()
                    );
                }
                let text = a.annotations.get(key).cloned().unwrap_or_default();
                let h = holes(&text);
                assert!(h.is_empty(), "{}: {key} = {text:?} has {h:?}", a.name());
            }
        }
    }
    for name in &critical {
        assert!(seen.contains(name), "{name} never notified");
    }

    // What the actions are told about each rule's evidence, derived from the
    // rule, its recording rules and the example's sources.
    let state = RulesAlertState {
        rules: p.rules.clone(),
        external_labels: Default::default(),
        lags: std::sync::RwLock::new(metric_lags(&p.loaded.config)),
    };
    let firing = |name: &str| {
        notifications
            .iter()
            .flat_map(|(_, n)| n.alerts.iter())
            .find(|a| a.name() == name && state.is_firing(a.fingerprint()) == Some(true))
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not firing at the end"))
    };
    let a = firing("HighErrorRate");
    // A 5m rate of request counts polled every 60 s: 5m + 60 s + 180 s + 60 s.
    assert_eq!(state.lookback_ms(a.fingerprint()), Some(10 * MIN));
    assert!(state
        .evidence_metrics(a.fingerprint())
        .unwrap()
        .contains("run_googleapis_com:request_count"));
    assert_eq!(state.rule_error(a.fingerprint()), None);
    // deriv over 30m of a recording rule over a 5m rate (or the gauge), lag 5m.
    let a = firing("MemoryLeakSuspected");
    assert_eq!(state.lookback_ms(a.fingerprint()), Some(40 * MIN));
    // An instant probe selector: no lookback.
    let a = firing("HealthProbeFailing");
    assert_eq!(state.lookback_ms(a.fingerprint()), Some(0));

    // The example's inhibit rules name alerts that exist.
    for rule in &p.loaded.config.inhibit_rules {
        for m in rule
            .source_matchers
            .iter()
            .chain(rule.target_matchers.iter())
        {
            if let Some(name) = m
                .strip_prefix("alertname=\"")
                .and_then(|s| s.strip_suffix('"'))
            {
                assert!(
                    annotations_of.contains_key(name),
                    "inhibit rule names {name}"
                );
            }
        }
    }
    drop(sim);
    p.shutdown().await;
}

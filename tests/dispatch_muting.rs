//! Inhibition, silences and time intervals through the dispatcher, against
//! Alertmanager's documented behaviour; plus config validation of the routing
//! section and the questions the rollback work asks.

mod dispatch_common;

use std::path::Path;
use std::time::Duration;

use dispatch_common::*;
use rearguard::labels::Labels;

const MIN: Duration = Duration::from_secs(60);

const RECEIVERS: &str = r#"
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:9/hook
"#;

#[tokio::test(start_paused = true)]
async fn a_critical_alert_inhibits_warnings_of_the_same_service() {
    let h = Harness::new(&format!(
        r#"
route:
  receiver: hook
  group_by: ['...']
  group_wait: 10s
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [service]
{RECEIVERS}"#
    ))
    .await;
    let t0 = h.now();
    let crit = h
        .fire(&[
            ("alertname", "Down"),
            ("severity", "critical"),
            ("service", "a"),
        ])
        .await;
    let warn_a = h
        .fire(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("service", "a"),
        ])
        .await;
    h.fire(&[
        ("alertname", "Slow"),
        ("severity", "warning"),
        ("service", "b"),
    ])
    .await;
    h.advance(MIN).await;
    let mut got: Vec<String> = h.take().iter().map(|(_, n)| n.group_key.clone()).collect();
    got.sort();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].contains(r#"alertname="Down""#) && got[1].contains(r#"service="b""#),
        "{got:?}"
    );
    let st = h.dispatcher.alert_status(&warn_a);
    assert_eq!(st.state, "suppressed");
    assert_eq!(st.inhibited_by, vec![crit.fingerprint_hex()]);
    assert!(h.dispatcher.is_suppressed(&warn_a));

    // The critical alert resolves: the warning is notified at its group's next tick.
    h.resolve(&crit).await;
    h.advance(5 * MIN).await;
    let got = h.take_summary(t0);
    assert!(
        got.contains(&(310, "hook".into(), s(&["Slow"]), vec![])),
        "{got:?}"
    );
    assert!(
        got.contains(&(310, "hook".into(), vec![], s(&["Down"]))),
        "{got:?}"
    );
    assert!(!h.dispatcher.is_suppressed(&warn_a));
}

#[tokio::test(start_paused = true)]
async fn silences_mute_until_they_expire() {
    let h = Harness::new(&format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n{RECEIVERS}"
    ))
    .await;
    let t0 = h.now();
    let mut deploy = h.silence_from_now("service", "back.*");
    deploy.matchers[0].is_regex = true;
    deploy.ends_at_ms = t0 + 20 * 60_000;
    deploy.comment = "deploy".into();
    let id = h.dispatcher.set_silence(deploy).await.unwrap();
    h.fire(&[("alertname", "Down"), ("service", "backend")])
        .await;
    h.fire(&[("alertname", "Other"), ("service", "frontend")])
        .await;
    h.advance(MIN).await;
    assert_eq!(
        h.take_summary(t0),
        vec![(30, "hook".into(), s(&["Other"]), vec![])]
    );
    assert_eq!(
        h.dispatcher
            .alert_status(&Labels::from_pairs([
                ("alertname", "Down"),
                ("service", "backend")
            ]))
            .silenced_by,
        vec![id.clone()]
    );
    let gauge = |state: &str| {
        h.registry
            .gather()
            .iter()
            .find(|f| f.name() == "rearguard_silences")
            .and_then(|f| {
                f.get_metric()
                    .iter()
                    .find(|m| m.get_label().iter().any(|l| l.value() == state))
                    .map(|m| m.get_gauge().get_value())
            })
            .unwrap_or(-1.0)
    };
    assert_eq!(gauge("active"), 1.0);
    // The silence ends at 20m: the next tick (30s + 4×5m = 20m30s) notifies.
    h.advance(19 * MIN).await;
    assert!(h.take().is_empty());
    h.advance(MIN).await;
    assert_eq!(
        h.take_summary(t0),
        vec![(1230, "hook".into(), s(&["Down"]), vec![])]
    );
    h.advance(MIN).await; // the gauge follows on the maintenance tick
    assert_eq!(gauge("active"), 0.0);
    assert_eq!(gauge("expired"), 1.0);

    // Expiring a silence early lets the alert through at the next tick.
    let id2 = h
        .dispatcher
        .set_silence(h.silence_from_now("alertname", "Third"))
        .await
        .unwrap();
    let since = h.now();
    h.fire(&[("alertname", "Third")]).await;
    h.advance(MIN).await;
    assert!(h.take().is_empty());
    h.dispatcher.expire_silence(&id2).await.unwrap();
    h.advance(5 * MIN).await;
    assert_eq!(
        h.take_summary(since),
        vec![(330, "hook".into(), s(&["Third"]), vec![])]
    );
}

#[tokio::test(start_paused = true)]
async fn mute_and_active_time_intervals() {
    // T0 is Monday 2026-11-23 00:00 UTC.
    let h = Harness::new(&format!(
        r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 0s
  routes:
    - matchers: ['team="web"']
      receiver: hook
      mute_time_intervals: [nightly-deploy]
    - matchers: ['team="office"']
      receiver: hook
      active_time_intervals: [business-hours]
time_intervals:
  - name: nightly-deploy
    time_intervals:
      - cron: "50 23 * * *"
        duration: 40m
  - name: business-hours
    time_intervals:
      - weekdays: ['monday:friday']
        times: [{{start_time: '09:00', end_time: '17:00'}}]
        location: Europe/Berlin
{RECEIVERS}"#
    ))
    .await;
    let t0 = h.now();
    assert_eq!(
        h.dispatcher.time_interval_active("nightly-deploy"),
        Some(true)
    );
    assert_eq!(
        h.dispatcher.time_interval_active("business-hours"),
        Some(false)
    );
    assert_eq!(h.dispatcher.time_interval_active("nope"), None);
    assert_eq!(
        h.dispatcher
            .time_interval_active_at("business-hours", t0 + 8 * 3_600_000),
        Some(true),
        "Monday 09:00 in Berlin"
    );
    h.fire(&[("alertname", "WebDown"), ("team", "web")]).await;
    h.fire(&[("alertname", "Printer"), ("team", "office")])
        .await;
    h.advance(25 * MIN).await;
    assert!(
        h.take().is_empty(),
        "muted by the deploy window / outside business hours"
    );
    let st = h.dispatcher.alert_status(&Labels::from_pairs([
        ("alertname", "WebDown"),
        ("team", "web"),
    ]));
    assert_eq!(
        (st.state, st.muted_by.clone()),
        ("suppressed", s(&["nightly-deploy"]))
    );
    // The window closes at 00:30: the tick at 00:30 notifies.
    h.advance(5 * MIN).await;
    assert_eq!(
        h.take_summary(t0),
        vec![(1800, "hook".into(), s(&["WebDown"]), vec![])]
    );
    // Business hours start at 09:00 Berlin = 08:00 UTC.
    h.advance(7 * 60 * MIN + 25 * MIN).await; // 07:55
    let got = h.take_summary(t0);
    assert_eq!(
        got,
        vec![(1800 + 4 * 3600, "hook".into(), s(&["WebDown"]), vec![])],
        "only WebDown's 4h repeat"
    );
    h.advance(5 * MIN).await; // 08:00
    assert_eq!(
        h.take_summary(t0),
        vec![(8 * 3600, "hook".into(), s(&["Printer"]), vec![])]
    );
}

#[test]
fn routing_config_errors_are_located() {
    let text = r#"receivers:
  - name: team
route:
  receiver: team
  routes:
    - receiver: nobody
      matchers: ['severity=~"("']
      mute_time_intervals: [later]
      group_by: ['...', alertname]
      group_interval: 0s
inhibit_rules:
  - source_matchers: ['a!']
    equal: ['bad-label']
time_intervals:
  - name: later
    time_intervals:
      - weekdays: ['funday']
  - name: later
"#;
    let err = rearguard::config::load_str(Path::new("/etc/rg.yaml"), text, |_| None).unwrap_err();
    let all = err.to_string();
    for needle in [
        "/etc/rg.yaml:6:17: receiver \"nobody\" is not defined",
        "/etc/rg.yaml:7:18: invalid matcher \"severity=~\\\"(\\\"\": invalid regular expression \"(\": unclosed group\n",
        "/etc/rg.yaml:9:18: cannot have grouping labels together with '...'",
        "/etc/rg.yaml:10:23: group_interval cannot be zero",
        "/etc/rg.yaml:12:23: invalid matcher",
        "/etc/rg.yaml:13:13: invalid label name \"bad-label\"",
        "/etc/rg.yaml:17:20: \"funday\" is not a valid weekday",
        "/etc/rg.yaml:18:11: duplicate time interval name \"later\"",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let text = "receivers: [{name: team}]\nroute:\n  receiver: team\n  matchers: ['a=b']\n  routes:\n    - mute_time_intervals: [missing]\n";
    let all = rearguard::config::load_str(Path::new("/x.yaml"), text, |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        all.contains("/x.yaml:4:13: the root route must not have any matchers"),
        "{all}"
    );
    assert!(
        all.contains("/x.yaml:6:29: time interval \"missing\" is not defined"),
        "{all}"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_silences_are_kept_five_days_then_dropped() {
    let h = Harness::new(&format!("route:\n  receiver: hook\n{RECEIVERS}")).await;
    let id = h
        .dispatcher
        .set_silence(h.silence_from_now("alertname", "X"))
        .await
        .unwrap();
    h.dispatcher.expire_silence(&id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(119 * 3600)).await;
    h.dispatcher.sync().await;
    assert!(h.dispatcher.silence(&id).is_some(), "kept for 120h");
    tokio::time::sleep(Duration::from_secs(3600 + 20 * 60)).await;
    h.dispatcher.sync().await;
    assert!(h.dispatcher.silence(&id).is_none(), "dropped after 120h");
    assert!(h.store.load_silences().await.unwrap().is_empty());
}

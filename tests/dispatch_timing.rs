//! Grouping and timing against Alertmanager's documented behaviour, on paused time.

mod dispatch_common;

use std::time::Duration;

use dispatch_common::*;

const MIN: Duration = Duration::from_secs(60);

fn receivers(send_resolved_webhook: bool) -> String {
    format!(
        r#"
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:9/hook
        send_resolved: {send_resolved_webhook}
  - name: mail
    email_configs:
      - to: oncall@example.com
        from: rearguard@example.com
        smarthost: smtp.example.com:587
"#
    )
}

/// A harness whose config is `route_yaml` over the hook and mail receivers.
async fn with_route(route_yaml: &str) -> Harness {
    Harness::new(&format!("{route_yaml}{}", receivers(true))).await
}

#[tokio::test(start_paused = true)]
async fn group_wait_collects_the_group_then_group_interval_paces_it() {
    let h = with_route("route:\n  receiver: hook\n  group_by: [alertname]\n").await;
    let t0 = h.now();
    h.fire(&[("alertname", "Down"), ("instance", "a")]).await;
    h.advance(Duration::from_secs(10)).await;
    h.fire(&[("alertname", "Down"), ("instance", "b")]).await;
    h.fire(&[("alertname", "Other"), ("instance", "a")]).await;
    h.advance(Duration::from_secs(19)).await;
    assert!(
        h.take().is_empty(),
        "nothing before group_wait (30s) has passed"
    );
    h.advance(Duration::from_secs(1)).await;
    assert_eq!(
        h.take_summary(t0),
        vec![(30, "hook".into(), s(&["Down/a", "Down/b"]), vec![])]
    );
    // The Other group started 10s later, so it waits its own 30s.
    h.advance(Duration::from_secs(10)).await;
    let got = h.take();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0 - t0) / 1000, 40);
    assert_eq!(got[0].1.group_key, r#"{}:{alertname="Other"}"#);
    assert_eq!(got[0].1.group_labels.to_string(), r#"{alertname="Other"}"#);

    // A new alert in a notified group waits for the next group_interval tick (30s + 5m).
    h.advance(MIN).await; // t = 1m40s
    h.fire(&[("alertname", "Down"), ("instance", "c")]).await;
    h.advance(Duration::from_secs(3 * 60 + 49)).await; // t = 5m29s
    assert!(h.take().is_empty(), "group_interval has not passed");
    h.advance(Duration::from_secs(1)).await; // t = 5m30s
    assert_eq!(
        h.take_summary(t0),
        vec![(
            330,
            "hook".into(),
            s(&["Down/a", "Down/b", "Down/c"]),
            vec![]
        )]
    );
    // Nothing changes: no notification at the next ticks.
    h.advance(10 * MIN).await;
    assert!(h.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_alert_resolved_inside_group_wait_is_never_notified() {
    let h = with_route("route:\n  receiver: hook\n").await;
    let a = h.fire(&[("alertname", "Blip")]).await;
    h.advance(Duration::from_secs(10)).await;
    h.resolve(&a).await;
    h.advance(30 * MIN).await;
    assert!(h.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn repeat_interval_defaults_to_4h_and_rounds_up_to_group_interval() {
    let mut h = with_route("route:\n  receiver: hook\n").await;
    let t0 = h.now();
    h.eval_interval = Duration::from_secs(60);
    h.fire(&[("alertname", "Down")]).await;
    h.advance(Duration::from_secs(30)).await;
    assert_eq!(h.take().len(), 1);
    h.advance(4 * 60 * MIN - MIN).await;
    assert!(h.take().is_empty(), "no repeat before 4h");
    h.advance(MIN).await;
    let got = h.take_summary(t0);
    assert_eq!(
        got,
        vec![(30 + 4 * 3600, "hook".into(), s(&["Down"]), vec![])]
    );

    // repeat_interval 7m with group_interval 5m: repeats land on the 10m tick.
    let h = with_route("route:\n  receiver: hook\n  group_wait: 0s\n  repeat_interval: 7m\n").await;
    let t0 = h.now();
    h.fire(&[("alertname", "Down")]).await;
    h.advance(25 * MIN).await;
    let times: Vec<i64> = h.take_summary(t0).into_iter().map(|x| x.0).collect();
    assert_eq!(times, vec![0, 600, 1200]);
}

#[tokio::test(start_paused = true)]
async fn resolved_notifications_follow_send_resolved() {
    // Webhook (send_resolved true by default): a partial resolution is told.
    let h = with_route("route:\n  receiver: hook\n  group_wait: 1s\n").await;
    let t0 = h.now();
    let a = h.fire(&[("alertname", "Down"), ("instance", "a")]).await;
    h.fire(&[("alertname", "Down"), ("instance", "b")]).await;
    h.advance(MIN).await;
    assert_eq!(h.take().len(), 1);
    h.resolve(&a).await;
    h.advance(5 * MIN).await;
    assert_eq!(
        h.take_summary(t0),
        vec![(301, "hook".into(), s(&["Down/b"]), s(&["Down/a"]))]
    );
    h.advance(30 * MIN).await;
    assert!(h.take().is_empty(), "the resolution is told once");

    // Email (send_resolved false by default): a partial resolution waits, but
    // "all resolved" is still handed over (the email integration drops resolved alerts).
    let h = with_route("route:\n  receiver: mail\n  group_wait: 1s\n").await;
    let t0 = h.now();
    let a = h.fire(&[("alertname", "Down"), ("instance", "a")]).await;
    let b = h.fire(&[("alertname", "Down"), ("instance", "b")]).await;
    h.advance(MIN).await;
    assert_eq!(h.take().len(), 1);
    h.resolve(&a).await;
    h.advance(10 * MIN).await;
    let got = h.take_summary(t0);
    assert!(
        got.is_empty(),
        "send_resolved false: a partial resolution is not a change: {got:?}"
    );
    h.resolve(&b).await;
    h.advance(5 * MIN).await;
    assert_eq!(
        h.take_summary(t0),
        vec![(901, "mail".into(), vec![], s(&["Down/a", "Down/b"]))]
    );
}

#[tokio::test(start_paused = true)]
async fn continue_and_group_by_all() {
    let h = Harness::new(&format!(
        r#"
route:
  receiver: mail
  group_by: [service]
  group_wait: 1s
  routes:
    - matchers: ['severity="critical"']
      receiver: hook
      group_by: ['...']
      continue: true
    - matchers: ['{{service=~"back.*"}}']
      receiver: mail
{}"#,
        receivers(true)
    ))
    .await;
    h.fire(&[
        ("alertname", "A"),
        ("severity", "critical"),
        ("service", "backend"),
    ])
    .await;
    h.fire(&[
        ("alertname", "B"),
        ("severity", "critical"),
        ("service", "backend"),
    ])
    .await;
    h.fire(&[
        ("alertname", "C"),
        ("severity", "warning"),
        ("service", "frontend"),
    ])
    .await;
    h.advance(MIN).await;
    let mut got: Vec<(String, String, usize)> = h
        .take()
        .into_iter()
        .map(|(_, n)| (n.receiver.clone(), n.group_key.clone(), n.alerts.len()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("hook".into(), r#"{}/{severity="critical"}:{alertname="A", service="backend", severity="critical"}"#.into(), 1),
            ("hook".into(), r#"{}/{severity="critical"}:{alertname="B", service="backend", severity="critical"}"#.into(), 1),
            ("mail".into(), r#"{}/{service=~"back.*"}:{service="backend"}"#.into(), 2),
            ("mail".into(), r#"{}:{service="frontend"}"#.into(), 1),
        ]
    );
    let status = h
        .dispatcher
        .alert_status(&rearguard::labels::Labels::from_pairs([
            ("alertname", "A"),
            ("severity", "critical"),
            ("service", "backend"),
        ]));
    assert_eq!(status.receivers, s(&["hook", "mail"]));
    assert_eq!(status.state, "active");
}

#[tokio::test(start_paused = true)]
async fn an_old_alert_does_not_wait_again_and_a_restart_does_not_resend() {
    let dir = tempfile::tempdir().unwrap();
    let store = rearguard::store::Store::open(dir.path()).unwrap();
    let yaml = format!("route:\n  receiver: hook\n{}", receivers(true));
    let h = Harness::with_store(&yaml, store, rearguard::clock::Clock::starting_at(T0)).await;
    let t0 = h.now();
    h.fire(&[("alertname", "Down")]).await;
    h.advance(MIN).await;
    assert_eq!(h.take().len(), 1);
    h.dispatcher.shutdown().await;
    drop(h);

    // Restart 10 minutes later: the rules re-send the alert that started at t0.
    tokio::time::sleep(10 * MIN).await;
    let store = rearguard::store::Store::open(dir.path()).unwrap();
    let clock = rearguard::clock::Clock::starting_at(T0 + 11 * 60_000);
    let h = Harness::with_store(&yaml, store, clock).await;
    h.fire_since(&[("alertname", "Down")], t0).await;
    h.advance(Duration::from_secs(1)).await;
    assert!(h.take().is_empty(), "already notified before the restart");
    // A new alert in the group: the group has flushed, so it waits for the next group_interval tick.
    h.fire_since(&[("alertname", "Down"), ("instance", "x")], t0)
        .await;
    h.advance(Duration::from_secs(1)).await;
    assert!(
        h.take().is_empty(),
        "the group has flushed; the new alert waits for group_interval"
    );
    h.advance(5 * MIN).await;
    assert_eq!(h.take().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_notification_is_retried_at_the_next_tick() {
    let h = with_route("route:\n  receiver: hook\n  group_wait: 0s\n").await;
    *h.sink.fail.lock().unwrap() = true;
    h.fire(&[("alertname", "Down")]).await;
    h.advance(MIN).await;
    assert!(h.take().is_empty());
    *h.sink.fail.lock().unwrap() = false;
    h.advance(5 * MIN).await;
    assert_eq!(h.take().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_alert_no_longer_sent_resolves_after_the_resolve_timeout() {
    let h = with_route("route:\n  receiver: hook\n  group_wait: 0s\n").await;
    let t0 = h.now();
    // Sent once, then never again (a rule removed on reload).
    let alert = rearguard::alert::Alert {
        labels: rearguard::labels::Labels::from_pairs([("alertname", "Gone")]),
        annotations: Default::default(),
        active_at_ms: t0,
        starts_at_ms: t0,
        ends_at_ms: None,
        value: 1.0,
        generator_url: String::new(),
    };
    rearguard::alert::AlertSink::send_alerts(&*h.dispatcher, vec![alert]);
    h.advance(MIN).await;
    assert_eq!(h.take().len(), 1);
    h.advance(10 * MIN).await;
    assert_eq!(
        h.take_summary(t0),
        vec![(300, "hook".into(), vec![], s(&["Gone"]))],
        "resolve_timeout 5m"
    );
}

#[tokio::test(start_paused = true)]
async fn reload_rebuilds_groups_without_resending() {
    let base = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n{}",
        receivers(true)
    );
    let h = Harness::new(&base).await;
    let t0 = h.now();
    h.fire(&[("alertname", "Down"), ("severity", "critical")])
        .await;
    h.advance(MIN).await;
    assert_eq!(h.take().len(), 1);
    // Reload: critical alerts now also go to `mail` (continue on a child route).
    let reloaded = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  routes:\n    - matchers: ['severity=\"critical\"']\n      receiver: mail\n      continue: true\n    - matchers: ['severity=~\".+\"']\n      receiver: hook\n{}",
        receivers(true)
    );
    h.dispatcher.apply(&load(&reloaded));
    h.dispatcher.sync().await;
    h.advance(Duration::from_secs(1)).await;
    let got = h.take_summary(t0);
    // The alert is older than group_wait, so the new `mail` group flushes at once;
    // the hook group has a new key (a child route), so hook hears of it again too.
    let mut receivers_told: Vec<String> = got.iter().map(|g| g.1.clone()).collect();
    receivers_told.sort();
    assert_eq!(receivers_told, s(&["hook", "mail"]), "{got:?}");
    assert!(got.iter().all(|g| g.0 == 60), "{got:?}");
    // Reloading the same config again does not resend anything.
    h.dispatcher.apply(&load(&reloaded));
    h.advance(10 * MIN).await;
    assert!(h.take().is_empty());
    assert_eq!(h.dispatcher.routes().len(), 3);
}

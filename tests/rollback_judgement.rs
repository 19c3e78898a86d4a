//! Whose evidence an alert is, on simulated time: an alert acts only on the
//! revision its evidence describes, and never rolls back onto a revision that
//! served inside its evidence window.

mod rollback_support;

use std::time::Duration;

use rearguard::action::{reason, Outcome, RequestCount, Trigger};
use rearguard::alert::Alert;
use rearguard::dispatch::NotificationSink;
use rollback_support::*;

/// The lookback of an error-ratio rule over Cloud Monitoring data: a 5m rate
/// plus 5m of source lag.
const LOOKBACK: i64 = 10 * MIN;

fn with_revision(mut a: Alert, revision: &str) -> Alert {
    let mut b = a.labels.builder();
    b = b.set("revision_name", revision);
    a.labels = b.build();
    a
}

fn skip_detail(h: &Harness) -> String {
    let ev = h.sink.alerts();
    assert_eq!(h.sink.phases(), ["skipped"], "{ev:?}");
    ev[0].annotations["summary"].clone()
}

/// 00002 is broken; its error alert goes pending at +2m; the fix 00003 is
/// deployed at +5m while the alert is pending; the alert (its 5m window still
/// holding 00002's errors) fires at +12m. Rolling back now would put the
/// broken 00002 back: rearguard must not act, and says why.
#[tokio::test(start_paused = true)]
async fn a_fix_deployed_while_the_error_alert_is_pending_is_not_rolled_back() {
    let h = Harness::new(&traffic_action(""));
    *h.world.lookback_ms.lock().unwrap() = Some(LOOKBACK);
    h.deploy("backend-00002", true);
    let a = alert(T0 + 2 * MIN);
    sleep_until(&h.clock, T0 + 5 * MIN).await;
    h.deploy("backend-00003", false);
    // The alert still holds: its window still has 00002's errors.
    *h.world.always_firing.lock().unwrap() = true;
    sleep_until(&h.clock, T0 + 12 * MIN).await;

    let out = h.runner.run("backend", Trigger::alert(a.clone())).await;
    assert_eq!(
        out.skip_reason(),
        Some(reason::STARTED_INSIDE_WINDOW),
        "{out:?}"
    );
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(h.serving(), "backend-00003");
    let text = skip_detail(&h);
    assert!(
        text.contains("backend-00003 began serving")
            && text.contains("inside the evidence window of BackendDown")
            && text.contains("backend-00002"),
        "{text}"
    );
    let decisions = h.audit_decisions().await;
    assert_eq!(
        decisions,
        [(
            "skipped".to_string(),
            reason::STARTED_INSIDE_WINDOW.to_string()
        )]
    );

    // The same alert about the broken revision (per-revision rules): that
    // revision no longer serves, so there is nothing to roll back.
    let h2 = Harness::new(&traffic_action(""));
    h2.deploy("backend-00002", true);
    sleep_until(&h2.clock, T0 + 5 * MIN).await;
    h2.deploy("backend-00003", false);
    *h2.world.always_firing.lock().unwrap() = true;
    let a2 = with_revision(alert(T0 + 2 * MIN), "backend-00002");
    let out = h2.runner.run("backend", Trigger::alert(a2)).await;
    assert_eq!(out.skip_reason(), Some(reason::OTHER_REVISION), "{out:?}");
    assert_eq!(h2.fake.accepted_patches(), 0);
    let text = skip_detail(&h2);
    assert!(
        text.contains("about revision backend-00002, but backend-00003 serves now"),
        "{text}"
    );
}

/// 00002 is broken; the fix 00003 goes out at +10m; the alert (on data that
/// lags) goes active a minute later. It is not evidence against 00003, and
/// 00002 is never the target.
#[tokio::test(start_paused = true)]
async fn a_fix_deployed_a_minute_before_the_alert_is_not_rolled_back_onto_the_old_revision() {
    let h = Harness::new(&traffic_action(""));
    *h.world.lookback_ms.lock().unwrap() = Some(LOOKBACK);
    h.deploy("backend-00002", true);
    sleep_until(&h.clock, T0 + 10 * MIN).await;
    h.deploy("backend-00003", false);
    *h.world.always_firing.lock().unwrap() = true;
    let a = alert(T0 + 11 * MIN);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(
        out.skip_reason(),
        Some(reason::STARTED_INSIDE_WINDOW),
        "{out:?}"
    );
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(h.serving(), "backend-00003");
}

/// A bad deploy whose alert names the serving revision is rolled back, and
/// the notice says how long the judged revision served and why.
#[tokio::test(start_paused = true)]
async fn an_alert_about_the_serving_revision_rolls_back_and_explains() {
    let h = Harness::new(&traffic_action(""));
    *h.world.lookback_ms.lock().unwrap() = Some(LOOKBACK);
    h.deploy("backend-00002", true);
    let a = with_revision(alert(T0 + 30_000), "backend-00002");
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
    assert_eq!(h.serving(), "backend-00001");
    let started = &h.sink.alerts()[0];
    let description = &started.annotations["description"];
    assert!(
        description.contains("backend-00002 has served since")
            && description.contains("BackendDown is about revision backend-00002"),
        "{description}"
    );
}

/// A few requests a minute with an occasional 5xx: the error alert fires,
/// but 6 failures of 70 requests are no evidence. No action, one notice that
/// says what was seen, and the alert keeps being watched: once enough
/// requests show the revision is bad, it is rolled back.
#[tokio::test(start_paused = true)]
async fn low_traffic_is_inconclusive_notified_once_and_watched() {
    let h = Harness::new(&traffic_action(""));
    *h.world.lookback_ms.lock().unwrap() = Some(LOOKBACK);
    *h.world.requests.lock().unwrap() = Some(RequestCount {
        total: 70.0,
        errors: 6.0,
    });
    h.deploy("backend-00002", true);
    let a = with_revision(alert(T0 + 30_000), "backend-00002");
    sleep_until(&h.clock, a.starts_at_ms).await;

    h.runner.send(h.notification(&a)).await.unwrap();
    h.runner.idle().await;
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(h.sink.phases(), ["skipped"]);
    let ev = &h.sink.alerts()[0];
    assert_eq!(ev.labels.get("reason"), Some("inconclusive"));
    let text = &ev.annotations["summary"];
    assert!(
        text.contains("6 of 70 requests to backend-00002 failed")
            && text.contains("at least 100 needed"),
        "{text}"
    );

    // Still too few a few minutes on: re-checked, but nobody is told twice.
    tokio::time::sleep(Duration::from_secs(150)).await;
    h.runner.idle().await;
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(h.sink.phases(), ["skipped"]);
    assert!(
        h.metric(
            "rearguard_rollback_skipped_total",
            &[("target", "backend"), ("reason", "inconclusive")]
        ) >= 3.0
    );
    let audited = h.audit_decisions().await;
    assert_eq!(audited.len(), 1, "{audited:?}");

    // Traffic picks up and the revision is clearly bad: the watch acts.
    *h.world.requests.lock().unwrap() = Some(RequestCount {
        total: 400.0,
        errors: 120.0,
    });
    tokio::time::sleep(Duration::from_secs(61)).await;
    wait_until(|| h.sink.phases().len() >= 3).await;
    h.runner.idle().await;
    assert_eq!(h.serving(), "backend-00001");
    assert_eq!(h.sink.phases(), ["skipped", "started", "verified"]);
    let description = &h.sink.alerts()[1].annotations["description"];
    assert!(
        description.contains("120 of 400 requests to backend-00002 failed"),
        "{description}"
    );
}

/// `min_requests: 0` turns the guard off.
#[tokio::test(start_paused = true)]
async fn min_requests_zero_acts_on_any_traffic() {
    let h = Harness::new(&traffic_action("    min_requests: 0\n"));
    *h.world.requests.lock().unwrap() = Some(RequestCount {
        total: 7.0,
        errors: 3.0,
    });
    h.deploy("backend-00002", true);
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
}

/// An alert kept while its rule's query fails is never evidence.
#[tokio::test(start_paused = true)]
async fn an_alert_whose_query_fails_is_not_evidence() {
    let h = Harness::new(&traffic_action(""));
    *h.world.rule_error.lock().unwrap() = Some("query source gmp did not answer within 30s".into());
    h.deploy("backend-00002", true);
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(out.skip_reason(), Some(reason::INCONCLUSIVE), "{out:?}");
    assert_eq!(h.fake.accepted_patches(), 0);
    let text = &h.sink.alerts()[0].annotations["summary"];
    assert!(text.contains("did not answer within 30s"), "{text}");
}

/// `veto: 5m`: rearguard first says what it will do and how to stop it; a
/// hold during the wait cancels the rollback (audited and told).
#[tokio::test(start_paused = true)]
async fn a_veto_is_cancelled_by_a_hold() {
    let (h, a) = bad_deploy(&traffic_action("    veto: 5m\n")).await;
    let started = h.clock.now_ms();
    h.runner.send(h.notification(&a)).await.unwrap();
    wait_until(|| !h.sink.phases().is_empty()).await;
    assert_eq!(h.sink.phases(), ["veto_window"]);
    let notice = &h.sink.alerts()[0];
    let summary = &notice.annotations["summary"];
    assert!(
        summary
            .contains("rolling back backend from backend-00002 to backend-00001 in 5m unless held"),
        "{summary}"
    );
    let description = &notice.annotations["description"];
    assert!(
        description.contains("rearguard hold backend")
            && description.contains("POST /api/v1/holds"),
        "{description}"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.runner
        .hold(Some("backend"), "looking at it myself", "alice")
        .await
        .unwrap();
    h.runner.idle().await;
    assert!(
        h.clock.now_ms() - started < 5 * MIN,
        "cancelled before the end"
    );
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(h.serving(), "backend-00002");
    assert_eq!(h.sink.phases(), ["veto_window", "skipped"]);
    let ev = &h.sink.alerts()[1];
    assert_eq!(ev.labels.get("reason"), Some(reason::VETOED));
    assert!(
        ev.annotations["summary"].contains("looking at it myself"),
        "{:?}",
        ev.annotations
    );
    let decisions: Vec<String> = h
        .audit_decisions()
        .await
        .into_iter()
        .map(|(d, r)| format!("{d}:{r}"))
        .collect();
    assert!(
        decisions.iter().any(|d| d.starts_with("veto_window:")),
        "{decisions:?}"
    );
    assert!(
        decisions.iter().any(|d| d == "skipped:vetoed"),
        "{decisions:?}"
    );
}

/// Without a hold, the veto window ends in the rollback, after re-checking
/// that the alert still fires and the same revision serves.
#[tokio::test(start_paused = true)]
async fn a_veto_that_expires_rolls_back() {
    let (h, a) = bad_deploy(&traffic_action("    veto: 5m\n")).await;
    let started = h.clock.now_ms();
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
    assert!(h.clock.now_ms() - started >= 5 * MIN);
    assert_eq!(h.serving(), "backend-00001");
    assert_eq!(h.sink.phases(), ["veto_window", "started", "verified"]);
}

/// If someone fixes it during the veto window, nothing is rolled back.
#[tokio::test(start_paused = true)]
async fn a_veto_window_during_which_a_fix_ships_does_nothing() {
    let (h, a) = bad_deploy(&traffic_action("    veto: 5m\n")).await;
    h.runner.send(h.notification(&a)).await.unwrap();
    wait_until(|| !h.sink.phases().is_empty()).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.deploy("backend-00003", false);
    // The alert (label-less) has not resolved yet in the rule manager's view.
    *h.world.always_firing.lock().unwrap() = true;
    h.runner.idle().await;
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(h.sink.phases(), ["veto_window", "skipped"]);
    assert_eq!(
        h.sink.alerts()[1].labels.get("reason"),
        Some(reason::SERVING_CHANGED)
    );
}

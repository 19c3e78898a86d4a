//! The Cloud Run source's traffic history as the runner's serving history,
//! and [`NoCloudRun`] for a daemon without a `gcp:` section.

use crate::action::cloud_run::{short_name, OperationState};
use crate::action::deps::{ServingHistory, ServingPeriod};
use crate::action::{CloudRunApi, CloudRunError, RevisionState, ServicePatch, ServiceState};
use crate::clock::TimestampMs;
use crate::dispatch::notification::BoxFuture;
use crate::source::cloud_run::CloudRunViews;

/// Serving periods from a traffic history (the revision with the largest
/// share of each split). A split is seen at a poll, up to one interval after
/// it happened, so each period is dated by the earliest time consistent with
/// what was seen: its revision's creation (`created`), but not before the
/// previous split was seen; the first split, by its revision's creation.
pub fn serving_periods(
    changes: &[crate::source::cloud_run::TrafficChange],
    created: impl Fn(&str) -> Option<TimestampMs>,
) -> Vec<ServingPeriod> {
    let mut out: Vec<ServingPeriod> = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let Some(main) = change.traffic.iter().max_by_key(|s| s.percent) else {
            continue;
        };
        let revision = short_name(&main.revision).to_string();
        if out.last().is_some_and(|p| p.revision == revision) {
            continue;
        }
        let mut since_ms = change.at_ms;
        if let Some(created) = created(&revision) {
            since_ms = match i.checked_sub(1).map(|p| changes[p].at_ms) {
                Some(previous_seen) => created.max(previous_seen).min(since_ms),
                None => since_ms.min(created),
            };
        }
        out.push(ServingPeriod { revision, since_ms });
    }
    out
}

impl ServingHistory for CloudRunViews {
    /// See [`serving_periods`].
    fn serving_history<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Vec<ServingPeriod>> {
        Box::pin(async move {
            let Some(view) = self.get(service) else {
                return Vec::new();
            };
            serving_periods(&view.traffic_history, |r| {
                view.revision(r)
                    .and_then(|r| r.create_time)
                    .map(|t| t.timestamp_millis())
            })
        })
    }
}

/// Cloud Run when no `gcp:` section is configured: every call of the API
/// says so, and no service has a serving history.
pub struct NoCloudRun;

impl NoCloudRun {
    fn err() -> CloudRunError {
        CloudRunError::Transport(
            "no `gcp:` section in the config: Cloud Run actions need one".to_string(),
        )
    }
}

/// No Cloud Run service is configured, so none has a serving history.
impl ServingHistory for NoCloudRun {
    fn serving_history<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Vec<ServingPeriod>> {
        Box::pin(async { Vec::new() })
    }
}

impl CloudRunApi for NoCloudRun {
    fn get_service<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<ServiceState, CloudRunError>> {
        Box::pin(async { Err(Self::err()) })
    }
    fn list_revisions<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RevisionState>, CloudRunError>> {
        Box::pin(async { Err(Self::err()) })
    }
    fn patch_service<'a>(
        &'a self,
        _: &'a str,
        _: ServicePatch,
    ) -> BoxFuture<'a, Result<OperationState, CloudRunError>> {
        Box::pin(async { Err(Self::err()) })
    }
    fn get_operation<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<OperationState, CloudRunError>> {
        Box::pin(async { Err(Self::err()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::cloud_run::{TrafficChange, TrafficShare};

    fn change(at_ms: i64, revision: &str) -> TrafficChange {
        TrafficChange {
            at_ms,
            traffic: vec![TrafficShare {
                revision: revision.into(),
                percent: 100,
                tag: None,
                latest: false,
            }],
        }
    }

    #[test]
    fn periods_are_dated_by_the_earliest_time_the_polls_allow() {
        let changes = [
            change(1_000, "s-1"),
            // s-2 was created at 4_500 and seen serving at 5_000 (a poll
            // later): it began serving at 4_500 at the earliest.
            change(5_000, "s-2"),
            change(6_000, "s-2"),
            // s-3 was created long before it got traffic: not before the
            // previous split was seen.
            change(9_000, "s-3"),
        ];
        let created = |r: &str| match r {
            "s-1" => Some(100),
            "s-2" => Some(4_500),
            "s-3" => Some(2_000),
            _ => None,
        };
        let p = serving_periods(&changes, created);
        let got: Vec<(&str, i64)> = p
            .iter()
            .map(|p| (p.revision.as_str(), p.since_ms))
            .collect();
        assert_eq!(got, [("s-1", 100), ("s-2", 4_500), ("s-3", 6_000)]);
        // Unknown creation: when it was seen.
        let p = serving_periods(&changes, |_| None);
        assert_eq!(p[1].since_ms, 5_000);
    }
}

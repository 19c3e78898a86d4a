//! The simulator's history mode: a past told on the simulated clock, leaving
//! in the fake APIs what Google would hold afterwards. Deploys, traffic
//! changes and IAM changes go through the fake Cloud Run and leave Admin
//! Activity audit entries ([`super::audit`]): a deploy logs one entry when its
//! operation starts and one when it ends, a gcloud traffic change one v1
//! entry. Request counts are written as Cloud Run's DELTA points of
//! `run.googleapis.com/request_count`, one a minute, at any past time.
//!
//! Uses only the simulator's own modules and `rearguard_clock`, so it moves
//! with the simulator.

use serde_json::{json, Value};

use super::audit::{self, ServiceRef};
use super::monitoring::{MetricKind, PointValue, SeriesSpec};
use super::run::DeploySpec;
use super::server::FakeGcp;
use super::service::REQUEST_COUNT;
use super::util::{random_hex, ApiError};
use rearguard_clock::TimestampMs;

/// Writes history into a [`FakeGcp`].
pub struct HistoryWriter<'a> {
    fake: &'a FakeGcp,
}

fn service_ref(name: &str) -> Result<ServiceRef, ApiError> {
    ServiceRef::parse(name).ok_or_else(|| {
        ApiError::invalid_argument(format!(
            "service name {name:?} is not projects/P/locations/L/services/S"
        ))
    })
}

impl<'a> HistoryWriter<'a> {
    pub fn new(fake: &'a FakeGcp) -> Self {
        Self { fake }
    }

    fn log(&self, entry: Value) -> Result<String, ApiError> {
        self.fake.lock().logging.add_json(entry)
    }

    /// `gcloud run deploy` by `actor`: the start entry now, the operation,
    /// the end entry when it completed (with the service as it was then).
    /// Returns the new revision's full name.
    pub async fn deploy(
        &self,
        service: &str,
        spec: DeploySpec,
        actor: &str,
    ) -> Result<String, ApiError> {
        let s = service_ref(service)?;
        let method = "google.cloud.run.v2.Services.UpdateService";
        let op = format!(
            "projects/{}/locations/{}/operations/{}",
            s.project,
            s.location,
            random_hex(8)
        );
        let request = json!({"service": {"name": service, "template": {"containers": [{"image": spec.image}]}}});
        self.log(audit::v2_first(
            &s,
            method,
            &op,
            actor,
            self.fake.now_ms(),
            request,
        ))?;
        let (revision, _) = self.fake.deploy(service, spec)?;
        self.fake.settle().await;
        let after = self.fake.service(service)?;
        self.log(audit::v2_last(
            &s,
            method,
            &op,
            actor,
            self.fake.now_ms(),
            after,
        ))?;
        Ok(revision)
    }

    /// `gcloud run services update-traffic --to-revisions R=100` by `actor`:
    /// all traffic to `revision` (short name), one v1 `ReplaceService` entry.
    pub async fn route_all_to(
        &self,
        service: &str,
        revision: &str,
        actor: &str,
    ) -> Result<(), ApiError> {
        let s = service_ref(service)?;
        let body = json!({"traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision, "percent": 100}]});
        let now = self.fake.now_ms();
        self.fake.lock().run.patch(now, service, &[], &body)?;
        self.fake.settle().await;
        let after = self.fake.service(service)?;
        self.log(audit::v1_replace(&s, actor, self.fake.now_ms(), &after))?;
        Ok(())
    }

    /// An IAM policy change on the service (noise: no traffic moves).
    pub fn set_iam_policy(&self, service: &str, actor: &str, member: &str) -> Result<(), ApiError> {
        let s = service_ref(service)?;
        self.log(audit::set_iam_policy(&s, actor, self.fake.now_ms(), member))?;
        Ok(())
    }

    /// Request counts of `revision` (short name) for each minute ending in
    /// `(from, to]`: `total` requests a minute, `errors` of them 5xx.
    pub fn requests(
        &self,
        service: &str,
        revision: &str,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
        total: i64,
        errors: i64,
    ) -> Result<(), ApiError> {
        let s = service_ref(service)?;
        let spec = |code: &str, class: &str| {
            SeriesSpec::cloud_run(
                REQUEST_COUNT,
                MetricKind::Delta,
                &s.project,
                &s.location,
                &s.short,
                revision,
            )
            .metric_label("response_code", code)
            .metric_label("response_code_class", class)
            .metric_label("route", "default")
            .unit("1")
        };
        let ok = spec("200", "2xx");
        let bad = spec("500", "5xx");
        let mut end = from_ms - from_ms.rem_euclid(60_000) + 60_000;
        while end <= to_ms {
            self.fake
                .add_point(&ok, end - 60_000, end, PointValue::Int64(total - errors))?;
            self.fake
                .add_point(&bad, end - 60_000, end, PointValue::Int64(errors))?;
            end += 60_000;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceSpec;
    use rearguard_clock::Clock;

    fn list(fake: &FakeGcp, filter: &str) -> Vec<Value> {
        let body = json!({"resourceNames": [format!("projects/{}", fake.project())], "filter": filter, "pageSize": 1000});
        let now = fake.now_ms();
        let v = fake.lock().logging.list_as(now, &body, None).unwrap();
        v["entries"].as_array().cloned().unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn deploys_log_a_start_and_an_end_and_a_loose_filter_matches_prefixed_services() {
        let clock = Clock::starting_at(1_790_000_000_000);
        let fake = FakeGcp::start(clock.clone()).await.unwrap();
        let p = fake.project();
        let api = format!("projects/{p}/locations/europe-west1/services/api");
        let admin = format!("projects/{p}/locations/europe-west1/services/api-admin");
        fake.create_service(ServiceSpec::new(&api)).unwrap();
        fake.create_service(ServiceSpec::new(&admin)).unwrap();
        let h = HistoryWriter::new(&fake);
        let rev = h
            .deploy(&api, DeploySpec::default(), "dev@example.com")
            .await
            .unwrap();
        h.deploy(&admin, DeploySpec::default(), "dev@example.com")
            .await
            .unwrap();
        h.set_iam_policy(&api, "admin@example.com", "allUsers")
            .unwrap();

        let activity = format!("logName=\"projects/{p}/logs/{}\"", audit::ACTIVITY_LOG);
        let exact = list(
            &fake,
            &format!("{activity} AND resource.labels.service_name=\"api\""),
        );
        let methods: Vec<(&str, Option<bool>, Option<bool>)> = exact
            .iter()
            .map(|e| {
                (
                    e["protoPayload"]["methodName"].as_str().unwrap(),
                    e["operation"]["first"].as_bool(),
                    e["operation"]["last"].as_bool(),
                )
            })
            .collect();
        assert_eq!(
            methods,
            vec![
                (
                    "google.cloud.run.v2.Services.UpdateService",
                    Some(true),
                    None
                ),
                (
                    "google.cloud.run.v2.Services.UpdateService",
                    None,
                    Some(true)
                ),
                ("google.cloud.run.v2.Services.SetIamPolicy", None, None),
            ]
        );
        // The end entry holds the service as it serves after the deploy.
        let short = rev.rsplit('/').next().unwrap();
        assert_eq!(
            exact[1]["protoPayload"]["response"]["latestReadyRevision"],
            rev.as_str()
        );
        assert!(exact[1]["protoPayload"]["response"]["trafficStatuses"].is_array());
        assert!(exact[0]["timestamp"].as_str() < exact[1]["timestamp"].as_str());
        assert!(short.starts_with("api-00002-"), "{short}");
        // ":" is "has": api-admin's entries come too.
        let loose = list(
            &fake,
            &format!("{activity} AND resource.labels.service_name:\"api\""),
        );
        assert_eq!(loose.len(), 5, "{loose:#?}");
    }
}

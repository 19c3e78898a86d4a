//! Every response body the fake emits, for each method, checked against the
//! response schema of Google's discovery documents (../shared/gcp-discovery).

use std::path::PathBuf;

use rearguard::clock::Clock;
use rearguard_sim::discovery::DiscoverySet;
use rearguard_sim::{
    BucketOptions, DeploySpec, Distribution, FakeGcp, LogEntrySpec, MetricKind, PointValue,
    RevisionBehaviour, SeriesSpec, ServiceSpec,
};
use serde_json::{json, Value};

const PROJECT: &str = "sim-project";
const SVC: &str = "projects/sim-project/locations/us-central1/services/backend";
const T0: i64 = 1_700_000_000_000;

fn docs() -> DiscoverySet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/gcp-discovery");
    DiscoverySet::load(&dir).expect("discovery documents in ../shared/gcp-discovery")
}

struct Checker {
    docs: DiscoverySet,
    http: reqwest::Client,
    base: String,
    checked: Vec<String>,
}

impl Checker {
    async fn call(
        &mut self,
        method: &str,
        req: reqwest::RequestBuilder,
        body: Option<Value>,
        query: &[(&str, &str)],
    ) -> Value {
        let params: Vec<(String, String)> = query
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let issues = self.docs.validate_params(method, &params).unwrap();
        assert!(issues.is_empty(), "{method} query: {issues:?}");
        let mut req = req.query(query);
        if let Some(b) = &body {
            let issues = self.docs.validate_request(method, b).unwrap();
            assert!(issues.is_empty(), "{method} request: {issues:?}");
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{method}: {status} {v}");
        let issues = self.docs.validate_response(method, &v).unwrap();
        assert!(
            issues.is_empty(),
            "{method} response {v:#}\n{}",
            issues
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        self.checked.push(method.to_string());
        v
    }
}

#[tokio::test(start_paused = true)]
async fn every_response_matches_the_discovery_schema() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeGcp::start(Clock::starting_at(T0)).await.unwrap();
    fake.set_require_auth(false);
    let good = fake
        .create_service(ServiceSpec::new(SVC).env("FLAG", "off"))
        .unwrap();
    let (bad, _) = fake
        .deploy(
            SVC,
            DeploySpec {
                env: vec![("FLAG".into(), "on".into())],
                behaviour: RevisionBehaviour::never_ready(),
                ..Default::default()
            },
        )
        .unwrap();
    fake.settle().await;
    let (project, location, service) = ("sim-project", "us-central1", "backend");
    let good_short = good.rsplit('/').next().unwrap().to_string();
    for i in 0..5i64 {
        let end = T0 + i * 60_000;
        let spec = SeriesSpec::cloud_run(
            "run.googleapis.com/request_count",
            MetricKind::Delta,
            project,
            location,
            service,
            &good_short,
        )
        .metric_label("response_code_class", "2xx")
        .unit("1");
        fake.add_point(&spec, end - 60_000, end, PointValue::Int64(10 + i))
            .unwrap();
        let lat = SeriesSpec::cloud_run(
            "run.googleapis.com/request_latencies",
            MetricKind::Delta,
            project,
            location,
            service,
            &good_short,
        )
        .unit("ms");
        let d = Distribution::from_values(
            BucketOptions::Exponential {
                num_finite_buckets: 20,
                growth_factor: 2.0,
                scale: 1.0,
            },
            &[3.0, 12.0, 40.0],
        );
        fake.add_point(&lat, end - 60_000, end, PointValue::Distribution(d))
            .unwrap();
        let mem = SeriesSpec::cloud_run(
            "custom.googleapis.com/memory_ratio",
            MetricKind::Gauge,
            project,
            location,
            service,
            &good_short,
        );
        fake.add_point(&mem, end, end, PointValue::Double(0.25 + i as f64 / 10.0))
            .unwrap();
        let d = Distribution::from_values(
            BucketOptions::Explicit {
                bounds: vec![0.0, 0.5, 1.0],
            },
            &[0.2],
        );
        let lin = SeriesSpec::cloud_run(
            "run.googleapis.com/container/memory/utilizations",
            MetricKind::Delta,
            project,
            location,
            service,
            &good_short,
        );
        fake.add_point(&lin, end - 60_000, end, PointValue::Distribution(d))
            .unwrap();
    }
    let rev_short = good_short.as_str();
    fake.add_log_entry(LogEntrySpec::cloud_run(
        project, location, service, rev_short, T0, "ERROR", "boom",
    ))
    .unwrap();
    let mut e = LogEntrySpec::cloud_run(
        project,
        location,
        service,
        rev_short,
        T0 + 1000,
        "WARNING",
        "",
    )
    .with_json(json!({"message": "slow", "latency_ms": 1200}));
    e.http_request = Some(
        json!({"requestMethod": "GET", "requestUrl": "/api", "status": 500, "latency": "1.2s", "responseSize": "312"}),
    );
    fake.add_log_entry(e).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;

    let base = fake.base_url();
    let mut c = Checker {
        docs: docs(),
        http: reqwest::Client::new(),
        base: base.clone(),
        checked: Vec::new(),
    };
    let h = c.http.clone();
    let b = &c.base.clone();

    let svc = c
        .call(
            "run.projects.locations.services.get",
            h.get(format!("{b}/v2/{SVC}")),
            None,
            &[],
        )
        .await;
    assert_eq!(svc["latestCreatedRevision"], bad.as_str());
    c.call(
        "run.projects.locations.services.list",
        h.get(format!(
            "{b}/v2/projects/{PROJECT}/locations/us-central1/services"
        )),
        None,
        &[("pageSize", "10")],
    )
    .await;
    let revs = c
        .call(
            "run.projects.locations.services.revisions.list",
            h.get(format!("{b}/v2/{SVC}/revisions")),
            None,
            &[("pageSize", "1")],
        )
        .await;
    assert!(revs["nextPageToken"].is_string());
    c.call(
        "run.projects.locations.services.revisions.get",
        h.get(format!("{b}/v2/{bad}")),
        None,
        &[],
    )
    .await;
    c.call(
        "run.projects.locations.services.revisions.get",
        h.get(format!("{b}/v2/{good}")),
        None,
        &[],
    )
    .await;

    let body = json!({"etag": svc["etag"], "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": good_short, "percent": 100, "tag": "stable"}]});
    let op = c
        .call(
            "run.projects.locations.services.patch",
            h.patch(format!("{b}/v2/{SVC}")),
            Some(body),
            &[],
        )
        .await;
    let op_name = op["name"].as_str().unwrap().to_string();
    c.call(
        "run.projects.locations.operations.get",
        h.get(format!("{b}/v2/{op_name}")),
        None,
        &[],
    )
    .await;
    let done = c
        .call(
            "run.projects.locations.operations.wait",
            h.post(format!("{b}/v2/{op_name}:wait")),
            Some(json!({"timeout": "60s"})),
            &[],
        )
        .await;
    assert_eq!(done["done"], true);
    c.call(
        "run.projects.locations.services.get",
        h.get(format!("{b}/v2/{SVC}")),
        None,
        &[],
    )
    .await;
    // A template change through the API: a new revision, a full Service body sent back.
    let mut svc = c
        .call(
            "run.projects.locations.services.get",
            h.get(format!("{b}/v2/{SVC}")),
            None,
            &[],
        )
        .await;
    svc["template"]["containers"][0]["image"] = json!("us-docker.pkg.dev/p/r/backend:v3");
    // Updated for issue 12: the deploy pinned template.revision as gcloud
    // does, and Cloud Run refuses a body naming an existing revision (409
    // ALREADY_EXISTS, google-cloud-python 11870): a new template clears it.
    svc["template"].as_object_mut().unwrap().remove("revision");
    let op = c
        .call(
            "run.projects.locations.services.patch",
            h.patch(format!("{b}/v2/{SVC}")),
            Some(svc),
            &[],
        )
        .await;
    let op_name = op["name"].as_str().unwrap().to_string();
    c.call(
        "run.projects.locations.operations.wait",
        h.post(format!("{b}/v2/{op_name}:wait")),
        Some(json!({})),
        &[],
    )
    .await;

    let end = fake.clock().now();
    let end_s = end.to_rfc3339();
    let start_s = (end - chrono::Duration::minutes(20)).to_rfc3339();
    let ts = format!("{b}/v3/projects/{PROJECT}/timeSeries");
    for (metric, extra) in [
        ("run.googleapis.com/request_count", vec![]),
        (
            "run.googleapis.com/request_count",
            vec![
                ("aggregation.alignmentPeriod", "60s"),
                ("aggregation.perSeriesAligner", "ALIGN_DELTA"),
                ("aggregation.crossSeriesReducer", "REDUCE_SUM"),
                (
                    "aggregation.groupByFields",
                    "metric.labels.response_code_class",
                ),
                ("aggregation.groupByFields", "resource.labels.revision_name"),
            ],
        ),
        (
            "run.googleapis.com/request_count",
            vec![
                ("aggregation.alignmentPeriod", "120s"),
                ("aggregation.perSeriesAligner", "ALIGN_RATE"),
            ],
        ),
        ("run.googleapis.com/request_latencies", vec![]),
        (
            "run.googleapis.com/request_latencies",
            vec![
                ("aggregation.alignmentPeriod", "60s"),
                ("aggregation.perSeriesAligner", "ALIGN_DELTA"),
            ],
        ),
        (
            "run.googleapis.com/request_latencies",
            vec![
                ("aggregation.alignmentPeriod", "60s"),
                ("aggregation.perSeriesAligner", "ALIGN_PERCENTILE_99"),
            ],
        ),
        (
            "custom.googleapis.com/memory_ratio",
            vec![
                ("aggregation.alignmentPeriod", "60s"),
                ("aggregation.perSeriesAligner", "ALIGN_MEAN"),
            ],
        ),
        ("custom.googleapis.com/memory_ratio", vec![]),
        ("run.googleapis.com/container/memory/utilizations", vec![]),
    ] {
        let filter =
            format!("metric.type = \"{metric}\" AND resource.labels.service_name = \"backend\"");
        let mut q = vec![
            ("filter", filter.as_str()),
            ("interval.startTime", start_s.as_str()),
            ("interval.endTime", end_s.as_str()),
        ];
        q.extend(extra);
        let v = c
            .call("monitoring.projects.timeSeries.list", h.get(&ts), None, &q)
            .await;
        assert!(
            v["timeSeries"].as_array().is_some_and(|a| !a.is_empty()),
            "{metric}: {v}"
        );
    }
    let v = c
        .call(
            "logging.entries.list",
            h.post(format!("{b}/v2/entries:list")),
            Some(json!({"resourceNames": [format!("projects/{PROJECT}")], "filter": "resource.type=\"cloud_run_revision\" AND severity>=WARNING", "orderBy": "timestamp asc", "pageSize": 1})),
            &[],
        )
        .await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    let token = v["nextPageToken"].as_str().unwrap().to_string();
    c.call(
        "logging.entries.list",
        h.post(format!("{b}/v2/entries:list")),
        Some(json!({"resourceNames": [format!("projects/{PROJECT}")], "filter": "resource.type=\"cloud_run_revision\" AND severity>=WARNING", "orderBy": "timestamp asc", "pageSize": 1, "pageToken": token})),
        &[],
    )
    .await;

    let mut methods = c.checked.clone();
    methods.sort();
    methods.dedup();
    assert_eq!(methods.len(), 9, "{methods:?}");
}

#[test]
fn validator_catches_what_google_would_reject() {
    let d = docs();
    let issues = d.run.validate(
        "GoogleCloudRunV2Service",
        &json!({"generation": 3, "traffic": [{"percent": "100", "type": "LATEST"}], "bogus": true}),
    );
    let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with("$.generation: expected a string")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("$.traffic[0].percent: expected a int32 integer")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("$.traffic[0].type: \"LATEST\" is not one of")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with("$.bogus: unknown field")),
        "{text:?}"
    );
    let issues = d
        .monitoring
        .validate("TypedValue", &json!({"int64Value": 5}));
    assert_eq!(issues.len(), 1);
    let issues = d
        .logging
        .validate("LogEntry", &json!({"timestamp": "yesterday"}));
    assert_eq!(issues.len(), 1);
    let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    assert!(d
        .validate_params(
            "monitoring.projects.timeSeries.list",
            &p("aggregation.perSeriesAligner", "ALIGN_DELTA")
        )
        .unwrap()
        .is_empty());
    assert_eq!(
        d.validate_params(
            "monitoring.projects.timeSeries.list",
            &p("aggregation.perSeriesAligner", "DELTA")
        )
        .unwrap()
        .len(),
        1
    );
    assert_eq!(
        d.validate_params(
            "monitoring.projects.timeSeries.list",
            &p("alignmentPeriod", "60s")
        )
        .unwrap()
        .len(),
        1
    );
    assert_eq!(
        d.validate_params(
            "monitoring.projects.timeSeries.list",
            &p("aggregation.alignmentPeriod", "60")
        )
        .unwrap()
        .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn strict_fake_refuses_unknown_fields_like_google() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = rearguard_sim::FakeOptions {
        discovery_dir: Some(rearguard_sim::discovery::default_dir()),
        require_auth: false,
        ..Default::default()
    };
    let fake = FakeGcp::start_with(Clock::starting_at(T0), options)
        .await
        .unwrap();
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v2/{SVC}", fake.base_url());
    let etag = fake.service(SVC).unwrap()["etag"].clone();
    let r = http
        .patch(&url)
        .json(&json!({"etag": etag, "trafic": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("$.trafic: unknown field"),
        "{v}"
    );
    let r = http
        .get(&url)
        .query(&[("view", "FULL")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "services.get has no view parameter");
    let r = http
        .post(format!("{}/v2/entries:list", fake.base_url()))
        .json(&json!({"resourceNames": ["projects/sim-project"], "pageSize": "10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "pageSize is an int32 number");
    let r = http
        .patch(&url)
        .json(&json!({"etag": etag, "labels": {"team": "core"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

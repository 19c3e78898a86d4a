//! The simulated service and the demo scenario: a bad deploy degrades health,
//! metrics and logs; moving traffic back through the fake API heals them.

use std::time::Duration;

use rearguard::clock::Clock;
use rearguard_sim::scenario::{Demo, DemoOptions, Scenario, Step};
use rearguard_sim::{LogEntrySpec, MetricKind, SeriesSpec};
use serde_json::{json, Value};

const T0: i64 = 1_700_000_000_000;

/// What the simulated service wrote, as the API answers it, must match the schema.
fn assert_valid(method: &str, v: &Value) {
    let docs =
        rearguard_sim::discovery::load_cached(&rearguard_sim::discovery::default_dir()).unwrap();
    let issues = docs.validate_response(method, v).unwrap();
    assert!(issues.is_empty(), "{method}: {issues:?}");
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Sum of request_count points for a class over the window, by the API.
async fn count(
    http: &reqwest::Client,
    base: &str,
    class: &str,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> i64 {
    let v: Value = http
        .get(format!("{base}/v3/projects/sim-project/timeSeries"))
        .query(&[
            ("filter", format!("metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code_class = \"{class}\"").as_str()),
            ("interval.startTime", start.to_rfc3339().as_str()),
            ("interval.endTime", end.to_rfc3339().as_str()),
            ("aggregation.alignmentPeriod", "60s"),
            ("aggregation.perSeriesAligner", "ALIGN_DELTA"),
            ("aggregation.crossSeriesReducer", "REDUCE_SUM"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid("monitoring.projects.timeSeries.list", &v);
    v["timeSeries"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            p["value"]["int64Value"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn bad_deploy_degrades_and_rollback_heals() {
    let http = http();
    let demo = Demo::start(
        Clock::starting_at(T0),
        DemoOptions {
            deploy_after: Duration::from_secs(120),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    demo.fake.set_require_auth(false);
    let base = demo.fake.base_url();
    let svc = demo.service_name.clone();

    // Healthy at first, and the service's uri points at the simulated service.
    let r = http.get(demo.service.health_url()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(demo.fake.service(&svc).unwrap()["uri"], demo.service.url());
    let t_start = demo.fake.clock().now();

    tokio::time::sleep(Duration::from_secs(125)).await;
    demo.fake.settle().await;
    let bad = demo.bad_revision().expect("deployed");
    assert_eq!(demo.fake.serving(&svc), vec![(bad.clone(), 100)]);
    let r = http.get(demo.service.health_url()).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-served-by"], bad.rsplit('/').next().unwrap());
    let t_deploy = demo.fake.clock().now();
    assert_eq!(count(&http, &base, "5xx", t_start, t_deploy).await, 0);
    assert!(count(&http, &base, "2xx", t_start, t_deploy).await >= 500);

    // Five bad minutes: errors in metrics and in logs.
    tokio::time::sleep(Duration::from_secs(300)).await;
    let t_bad = demo.fake.clock().now();
    let errors = count(&http, &base, "5xx", t_deploy, t_bad).await;
    assert!(errors > 500, "errors {errors}");
    let logs: Value = http
        .post(format!("{base}/v2/entries:list"))
        .json(&json!({"resourceNames": ["projects/sim-project"], "filter": format!("resource.type=\"cloud_run_revision\" AND resource.labels.revision_name=\"{}\" AND severity>=ERROR", bad.rsplit('/').next().unwrap()), "pageSize": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logs["entries"].as_array().unwrap().len(), 5);
    assert_valid("logging.entries.list", &logs);
    // Raw latency and memory distributions as written.
    for metric in [
        "run.googleapis.com/request_latencies",
        "run.googleapis.com/container/memory/utilizations",
    ] {
        let v: Value = http
            .get(format!("{base}/v3/projects/sim-project/timeSeries"))
            .query(&[
                ("filter", format!("metric.type = \"{metric}\"").as_str()),
                ("interval.startTime", t_deploy.to_rfc3339().as_str()),
                ("interval.endTime", t_bad.to_rfc3339().as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            v["timeSeries"][0]["points"][0]["value"]["distributionValue"]["count"].is_string(),
            "{v}"
        );
        assert_valid("monitoring.projects.timeSeries.list", &v);
    }

    // Roll back through the API: traffic to the good revision, with the etag.
    let s = demo.fake.service(&svc).unwrap();
    let good_short = demo.good_revision.rsplit('/').next().unwrap();
    let r = http
        .patch(format!("{base}/v2/{svc}"))
        .json(&json!({"etag": s["etag"], "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": good_short, "percent": 100}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    demo.fake.settle().await;
    assert_eq!(
        demo.fake.serving(&svc),
        vec![(demo.good_revision.clone(), 100)]
    );
    let r = http.get(demo.service.health_url()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Skip the minute in which the switch happened; after it, no errors.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let t_heal = demo.fake.clock().now();
    tokio::time::sleep(Duration::from_secs(240)).await;
    let t_end = demo.fake.clock().now();
    assert_eq!(count(&http, &base, "5xx", t_heal, t_end).await, 0);
    assert!(count(&http, &base, "2xx", t_heal, t_end).await > 500);
    assert_eq!(
        demo.fake
            .calls_to("run.projects.locations.services.patch")
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn env_rollback_makes_a_healthy_revision() {
    let demo = Demo::start(
        Clock::starting_at(T0),
        DemoOptions {
            deploy_after: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    demo.fake.set_require_auth(false);
    tokio::time::sleep(Duration::from_secs(20)).await;
    demo.fake.settle().await;
    let svc = demo.service_name.clone();
    let bad = demo.bad_revision().unwrap();
    let mut s = demo.fake.service(&svc).unwrap();
    let env = s["template"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap();
    for e in env.iter_mut() {
        if e["name"] == "USE_CLOUDRUN_JOBS_SANDBOX" {
            e["value"] = json!("false");
        }
    }
    // Updated for issue 12: the deploy pinned template.revision as gcloud
    // does; Cloud Run refuses a template naming an existing revision (409
    // ALREADY_EXISTS, google-cloud-python 11870), so the new one clears it.
    s["template"].as_object_mut().unwrap().remove("revision");
    let r = http()
        .patch(format!("{}/v2/{svc}", demo.fake.base_url()))
        .json(&json!({"etag": s["etag"], "template": s["template"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    demo.fake.settle().await;
    let serving = demo.fake.serving(&svc);
    assert_eq!(serving.len(), 1);
    assert_ne!(serving[0].0, bad);
    assert!(serving[0].0.contains("-00003-"), "{serving:?}");
    let r = http().get(demo.service.health_url()).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn scenario_ramps_a_gauge_and_bursts_logs() {
    let fake = rearguard_sim::FakeGcp::start(Clock::starting_at(T0))
        .await
        .unwrap();
    let series = SeriesSpec::new(
        "custom.googleapis.com/queue_depth",
        MetricKind::Gauge,
        "global",
    )
    .resource_label("project_id", "sim-project");
    let entry = LogEntrySpec::cloud_run(
        "sim-project",
        "us-central1",
        "backend",
        "backend-00001-abc",
        0,
        "ERROR",
        "boom",
    );
    let mut h = Scenario::new()
        .at(
            Duration::from_secs(60),
            Step::Ramp {
                series,
                from: 0.0,
                to: 100.0,
                over: Duration::from_secs(600),
                every: Duration::from_secs(60),
            },
        )
        .at(
            Duration::from_secs(120),
            Step::LogBurst {
                entry,
                count: 30,
                over: Duration::from_secs(30),
            },
        )
        .spawn(&fake);
    h.finished().await;
    assert_eq!(fake.now_ms(), T0 + 660_000);
    assert_eq!(h.events().len(), 2);
    fake.set_require_auth(false);
    let v: Value = http()
        .get(format!(
            "{}/v3/projects/sim-project/timeSeries",
            fake.base_url()
        ))
        .query(&[
            (
                "filter",
                "metric.type = \"custom.googleapis.com/queue_depth\"",
            ),
            (
                "interval.startTime",
                chrono::DateTime::from_timestamp_millis(T0)
                    .unwrap()
                    .to_rfc3339()
                    .as_str(),
            ),
            ("interval.endTime", fake.clock().now().to_rfc3339().as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let points = v["timeSeries"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 11);
    assert_eq!(points[0]["value"]["doubleValue"], 100.0);
    assert_eq!(points[10]["value"]["doubleValue"], 0.0);
    let logs: Value = http()
        .post(format!("{}/v2/entries:list", fake.base_url()))
        .json(&json!({"resourceNames": ["projects/sim-project"], "pageSize": 1000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logs["entries"].as_array().unwrap().len(), 30);
}

//! The fake Cloud Run API and token endpoint, over real HTTP, as a client sees them.

use std::time::Duration;

use rearguard::clock::Clock;
use rearguard::sim::{DeploySpec, FakeGcp, Fault, RevisionBehaviour, ServiceSpec};
use serde_json::{json, Value};

const SVC: &str = "projects/sim-project/locations/us-central1/services/backend";

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn token(fake: &FakeGcp, http: &reqwest::Client) -> String {
    let v: Value = http
        .get(format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            fake.base_url()
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(start_paused = true)]
async fn patch_traffic_with_etag_and_wait_for_operation() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    let good = fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let (bad, _) = fake
        .deploy(
            SVC,
            DeploySpec {
                behaviour: RevisionBehaviour::bad(),
                ..Default::default()
            },
        )
        .unwrap();
    fake.settle().await;
    assert_eq!(fake.serving(SVC), vec![(bad.clone(), 100)]);

    let http = http_client();
    let url = format!("{}/v2/{SVC}", fake.base_url());
    // No token: 401 UNAUTHENTICATED.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let tok = token(&fake, &http).await;

    let svc: Value = http
        .get(&url)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(svc["generation"], "2");
    let etag = svc["etag"].as_str().unwrap().to_string();
    let good_short = good.rsplit('/').next().unwrap();
    let body = json!({"etag": etag, "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": good_short, "percent": 100}]});
    let op: Value = http
        .patch(&url)
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(op["done"], false);
    // The same etag again is stale now: 409 ABORTED.
    let r = http
        .patch(&url)
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["status"], "ABORTED");

    let op_name = op["name"].as_str().unwrap();
    let waited: Value = http
        .post(format!("{}/v2/{op_name}:wait", fake.base_url()))
        .bearer_auth(&tok)
        .json(&json!({"timeout": "30s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(waited["done"], true);
    assert_eq!(
        waited["response"]["trafficStatuses"][0]["revision"],
        good_short
    );
    assert_eq!(fake.serving(SVC), vec![(good.clone(), 100)]);

    let patches = fake.calls_to("run.projects.locations.services.patch");
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].etag.as_deref(), Some(etag.as_str()));
    assert_eq!((patches[0].status, patches[1].status), (200, 409));
}

#[tokio::test(start_paused = true)]
async fn revisions_list_pages_newest_first() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.set_require_auth(false);
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    for i in 0..4 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        fake.deploy(
            SVC,
            DeploySpec {
                env: vec![("V".into(), i.to_string())],
                ..Default::default()
            },
        )
        .unwrap();
    }
    fake.settle().await;
    let http = http_client();
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let v: Value = http
            .get(format!("{}/v2/{SVC}/revisions", fake.base_url()))
            .query(&[("pageSize", "2"), ("pageToken", token.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in v["revisions"].as_array().unwrap() {
            names.push(r["name"].as_str().unwrap().to_string());
        }
        match v["nextPageToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(names.len(), 5);
    assert!(names[0].contains("backend-00005-"), "{names:?}");
    assert!(names[4].contains("backend-00001-"), "{names:?}");
}

#[tokio::test(start_paused = true)]
async fn faults_answer_as_injected() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.set_require_auth(false);
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    fake.inject(Fault::rate_limited("run.projects.locations.services.get", 7).times(1));
    fake.inject(
        Fault::new("run.*", rearguard::sim::FaultKind::TruncatedJson)
            .after(1)
            .times(1),
    );
    let http = http_client();
    let url = format!("{}/v2/{SVC}", fake.base_url());
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "truncated: {text}"
    );
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn google_cloud_auth_metadata_credentials_get_a_token() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let client = http_client();
    let creds = google_cloud_auth::credentials::mds::Builder::default()
        .with_endpoint(fake.base_url())
        .with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
        .build()
        .unwrap();
    let headers = match creds.headers(http::Extensions::new()).await.unwrap() {
        google_cloud_auth::credentials::CacheableResource::New { data, .. } => data,
        google_cloud_auth::credentials::CacheableResource::NotModified => panic!("no headers"),
    };
    let auth = headers[http::header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(auth.starts_with("Bearer ya29.fake-"));
    let r = client
        .get(format!("{}/v2/{SVC}", fake.base_url()))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let call = &fake.calls_to("metadata.token")[0];
    assert_eq!(
        call.param("scopes"),
        Some("https://www.googleapis.com/auth/cloud-platform")
    );
}

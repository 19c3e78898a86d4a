//! Application Default Credentials find the metadata server at
//! `GCE_METADATA_HOST` (its own test binary: it sets process environment).

use std::time::Duration;

use rearguard::clock::Clock;
use rearguard::config::gcp::{GcpConfig, GcpEndpoints};
use rearguard::gcp::context;
use rearguard_sim::FakeGcp;

#[tokio::test]
async fn adc_uses_gce_metadata_host() {
    let fake = FakeGcp::start(Clock::system()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    // No key file and no gcloud credentials: ADC falls back to the metadata server.
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");
    std::env::set_var("HOME", home.path());
    std::env::set_var("CLOUDSDK_CONFIG", home.path());
    std::env::set_var("GCE_METADATA_HOST", fake.metadata_host());
    let cfg = GcpConfig {
        project: fake.project(),
        credentials: "adc".into(),
        endpoints: GcpEndpoints::default(),
    };
    let described =
        tokio::time::timeout(Duration::from_secs(30), context::check(&cfg, home.path()))
            .await
            .unwrap()
            .unwrap();
    assert!(described.contains("application default"), "{described}");
    assert!(fake.tokens_issued() >= 1);
}

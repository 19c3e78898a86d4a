//! examples/cloud-run-staging.yaml loads, validates, and drives the sources
//! against the fake when its endpoints are pointed there.

use std::path::Path;

use rearguard::config;

#[test]
fn cloud_run_staging_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cloud-run-staging.yaml");
    let raw = std::fs::read_to_string(&path).unwrap();
    let loaded = config::load_str(&path, &raw, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let c = loaded.config;
    let gcp = c.gcp.expect("gcp section");
    assert_eq!(gcp.project, "netra-staging");
    assert_eq!(gcp.credentials, "adc");
    assert_eq!(c.cloud_monitoring.len(), 4);
    assert_eq!(c.cloud_logging.len(), 3);
    assert_eq!(
        c.cloud_run[0].service,
        "projects/netra-staging/locations/us-central1/services/netra-backend-staging"
    );
    assert!(matches!(
        c.query_sources.get("gmp"),
        Some(config::gcp::QuerySourceConfig::CloudMonitoringPromql { .. })
    ));
    // The environment can point it at the fake.
    let loaded = config::load_str(&path, &raw, |n| {
        (n == "GCP_RUN_ENDPOINT").then(|| "http://127.0.0.1:1".into())
    })
    .unwrap();
    assert_eq!(
        loaded.config.gcp.unwrap().endpoints.run,
        "http://127.0.0.1:1"
    );
}

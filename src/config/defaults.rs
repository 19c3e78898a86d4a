//! Every default of the config file, in one place. `examples/rearguard.yaml`
//! shows each of them in a comment; keep the two in step.

use std::net::SocketAddr;

use super::duration::Dur;

pub fn listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
pub fn state_dir() -> std::path::PathBuf {
    "./state".into()
}
pub const EVALUATION_INTERVAL: Dur = Dur::secs(15);
pub const RETENTION: Dur = Dur::secs(6 * 3600);
/// How often the tsdb's WAL is written and fsynced; a `kill -9` loses at
/// most this much of the sample history.
pub const TSDB_FLUSH_INTERVAL: Dur = Dur::secs(1);
/// The bounds of `tsdb_flush_interval`: below 100 ms the fsyncs cost more
/// than they save, above a minute a crash blinds `rate(…[1m])` rules.
pub const TSDB_FLUSH_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_millis(100);
pub const TSDB_FLUSH_INTERVAL_MAX: std::time::Duration = std::time::Duration::from_secs(60);

pub const PROBE_INTERVAL: Dur = Dur::secs(15);
pub const PROBE_TIMEOUT: Dur = Dur::secs(5);
pub const PROBE_METHOD: &str = "GET";
pub const PROBE_FOLLOW_REDIRECTS: bool = true;
/// Accepted status codes when `expect.status` is not given: any 2xx.
pub const PROBE_STATUS_RANGE: std::ops::RangeInclusive<u16> = 200..=299;
/// Jitter added to each probe's schedule, as a fraction of its interval.
pub const PROBE_JITTER_FRACTION: f64 = 0.1;

pub const GCP_CREDENTIALS: &str = "adc";
pub const GCP_RUN_ENDPOINT: &str = "https://run.googleapis.com";
pub const GCP_MONITORING_ENDPOINT: &str = "https://monitoring.googleapis.com";
pub const GCP_LOGGING_ENDPOINT: &str = "https://logging.googleapis.com";
pub const CLOUD_MONITORING_INTERVAL: Dur = Dur::secs(60);
pub const CLOUD_LOGGING_INTERVAL: Dur = Dur::secs(30);
pub const CLOUD_MONITORING_OVERLAP: Dur = Dur::secs(10 * 60);
/// How long an aligned period of a summing aligner (`ALIGN_DELTA`, ...) may
/// still be filling: Cloud Run's metrics are "not visible for up to 180
/// seconds" after sampling (https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run).
pub const CLOUD_MONITORING_INGESTION_LAG: Dur = Dur::secs(180);
pub const CLOUD_LOGGING_OVERLAP: Dur = Dur::secs(2 * 60);
/// How far beyond the overlap a log query reads back after a gap.
pub const CLOUD_LOGGING_MAX_CATCH_UP: Dur = Dur::secs(15 * 60);
pub const CLOUD_RUN_INTERVAL: Dur = Dur::secs(30);

/// Prometheus's `--query.timeout` default.
pub fn query_timeout() -> Dur {
    Dur::secs(120)
}

/// Prometheus's `--query.max-samples` default.
pub fn query_max_samples() -> usize {
    50_000_000
}

/// Prometheus's `--query.max-concurrency` default.
pub fn query_max_concurrency() -> usize {
    20
}

//! `gcp:`, `cloud_monitoring:`, `cloud_logging:`, `cloud_run:` and `query_sources:`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;
use super::duration::Dur;
use super::{Validator, YamlPath};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    pub project: String,
    /// `adc` (Application Default Credentials) or a path to a service-account key file.
    #[serde(default = "default_credentials")]
    pub credentials: String,
    #[serde(default)]
    pub endpoints: GcpEndpoints,
}

fn default_credentials() -> String {
    defaults::GCP_CREDENTIALS.to_string()
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpEndpoints {
    #[serde(default = "default_run")]
    pub run: String,
    #[serde(default = "default_monitoring")]
    pub monitoring: String,
    #[serde(default = "default_logging")]
    pub logging: String,
}

impl Default for GcpEndpoints {
    fn default() -> Self {
        Self {
            run: default_run(),
            monitoring: default_monitoring(),
            logging: default_logging(),
        }
    }
}

fn default_run() -> String {
    defaults::GCP_RUN_ENDPOINT.into()
}
fn default_monitoring() -> String {
    defaults::GCP_MONITORING_ENDPOINT.into()
}
fn default_logging() -> String {
    defaults::GCP_LOGGING_ENDPOINT.into()
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudMonitoringConfig {
    pub name: String,
    pub metric: String,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default = "default_monitoring_interval")]
    pub interval: Dur,
    /// How far back every poll re-reads, because points arrive minutes late.
    #[serde(default = "default_monitoring_overlap")]
    pub overlap: Dur,
    /// With a summing aligner, periods newer than this are still filling and
    /// are not taken yet (they are read again until they are older).
    #[serde(default = "default_monitoring_ingestion_lag")]
    pub ingestion_lag: Dur,
    #[serde(default)]
    pub aggregation: Option<AggregationConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    #[serde(default)]
    pub alignment_period: Option<Dur>,
    #[serde(default)]
    pub per_series_aligner: Option<String>,
    #[serde(default)]
    pub cross_series_reducer: Option<String>,
    #[serde(default)]
    pub group_by_fields: Vec<String>,
}

fn default_monitoring_interval() -> Dur {
    defaults::CLOUD_MONITORING_INTERVAL
}
fn default_monitoring_ingestion_lag() -> Dur {
    defaults::CLOUD_MONITORING_INGESTION_LAG
}
fn default_monitoring_overlap() -> Dur {
    defaults::CLOUD_MONITORING_OVERLAP
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudLoggingConfig {
    pub name: String,
    pub filter: String,
    #[serde(default = "default_logging_interval")]
    pub interval: Dur,
    /// How far before the cursor every poll re-reads (entries arrive late);
    /// insertIds de-duplicate what is read twice.
    #[serde(default = "default_logging_overlap")]
    pub overlap: Dur,
    /// After a gap (rearguard down, or the API unavailable), how far beyond the
    /// overlap a poll reads back; older entries are never counted.
    #[serde(default = "default_logging_max_catch_up")]
    pub max_catch_up: Dur,
}

fn default_logging_interval() -> Dur {
    defaults::CLOUD_LOGGING_INTERVAL
}
fn default_logging_overlap() -> Dur {
    defaults::CLOUD_LOGGING_OVERLAP
}
fn default_logging_max_catch_up() -> Dur {
    defaults::CLOUD_LOGGING_MAX_CATCH_UP
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudRunConfig {
    /// `projects/P/locations/L/services/S`
    pub service: String,
    #[serde(default = "default_run_interval")]
    pub interval: Dur,
}

fn default_run_interval() -> Dur {
    defaults::CLOUD_RUN_INTERVAL
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum QuerySourceConfig {
    Prometheus {
        url: String,
        #[serde(default)]
        bearer_token_file: Option<PathBuf>,
        #[serde(default)]
        basic_auth: Option<BasicAuthConfig>,
        #[serde(default)]
        timeout: Option<Dur>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    CloudMonitoringPromql {
        #[serde(default)]
        project: Option<String>,
        #[serde(default)]
        timeout: Option<Dur>,
    },
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password_file: PathBuf,
}

const ALIGNERS: &[&str] = &[
    "ALIGN_NONE",
    "ALIGN_DELTA",
    "ALIGN_RATE",
    "ALIGN_INTERPOLATE",
    "ALIGN_NEXT_OLDER",
    "ALIGN_MIN",
    "ALIGN_MAX",
    "ALIGN_MEAN",
    "ALIGN_COUNT",
    "ALIGN_SUM",
    "ALIGN_STDDEV",
    "ALIGN_COUNT_TRUE",
    "ALIGN_COUNT_FALSE",
    "ALIGN_FRACTION_TRUE",
    "ALIGN_PERCENTILE_99",
    "ALIGN_PERCENTILE_95",
    "ALIGN_PERCENTILE_50",
    "ALIGN_PERCENTILE_05",
    "ALIGN_PERCENT_CHANGE",
];

const REDUCERS: &[&str] = &[
    "REDUCE_NONE",
    "REDUCE_MEAN",
    "REDUCE_MIN",
    "REDUCE_MAX",
    "REDUCE_SUM",
    "REDUCE_STDDEV",
    "REDUCE_COUNT",
    "REDUCE_COUNT_TRUE",
    "REDUCE_COUNT_FALSE",
    "REDUCE_FRACTION_TRUE",
    "REDUCE_PERCENTILE_99",
    "REDUCE_PERCENTILE_95",
    "REDUCE_PERCENTILE_50",
    "REDUCE_PERCENTILE_05",
];

/// Cloud Logging's quota of `entries.list` calls a minute per project.
const LOGGING_CALLS_PER_MINUTE: f64 = 60.0;

fn valid_project(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 100
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'))
}

fn valid_endpoint(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// `projects/P/locations/L/services/S`
pub fn valid_service_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 6
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "services"
        && [parts[1], parts[3], parts[5]].iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

fn check_names<'a>(
    names: impl Iterator<Item = (usize, &'a str)>,
    section: &str,
    key: &str,
    v: &mut Validator,
) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, name) in names {
        let path = YamlPath::root().key(section).index(i).key(key);
        if name.trim().is_empty() {
            v.error(&path, format!("{key} must not be empty"));
        } else if !seen.insert(name.to_string()) {
            v.error(
                &path,
                format!("{key} {name:?} is used twice in {section}; each must be unique"),
            );
        }
    }
}

/// Validates `gcp:`, `cloud_monitoring:`, `cloud_logging:`, `cloud_run:` and
/// the `cloud_monitoring_promql` query sources.
pub fn validate(config: &super::Config, v: &mut Validator) {
    let root = YamlPath::root();
    let needs_gcp = !config.cloud_monitoring.is_empty()
        || !config.cloud_logging.is_empty()
        || !config.cloud_run.is_empty()
        || config
            .query_sources
            .values()
            .any(|q| matches!(q, QuerySourceConfig::CloudMonitoringPromql { .. }));
    match &config.gcp {
        None if needs_gcp => {
            let first = ["cloud_monitoring", "cloud_logging", "cloud_run"]
                .into_iter()
                .find(|k| match *k {
                    "cloud_monitoring" => !config.cloud_monitoring.is_empty(),
                    "cloud_logging" => !config.cloud_logging.is_empty(),
                    _ => !config.cloud_run.is_empty(),
                })
                .unwrap_or("query_sources");
            v.error(
                &root.key(first),
                format!(
                    "{first} needs a gcp: section (gcp: {{project: my-project, credentials: adc}})"
                ),
            );
        }
        None => {}
        Some(g) => {
            let p = root.key("gcp");
            if !valid_project(&g.project) {
                v.error(
                    &p.key("project"),
                    format!(
                        "invalid project id {:?} (lowercase letters, digits and hyphens)",
                        g.project
                    ),
                );
            }
            if g.credentials.trim().is_empty() {
                v.error(
                    &p.key("credentials"),
                    "credentials must be adc or a path to a key file",
                );
            } else if g.credentials != "adc" {
                let file =
                    super::secret::resolve_path(v.base_dir, std::path::Path::new(&g.credentials));
                if !file.is_file() {
                    v.error(
                        &p.key("credentials"),
                        format!(
                            "key file {} does not exist (write adc for Application Default Credentials, or the path of a service-account key file)",
                            file.display()
                        ),
                    );
                }
            }
            for (key, u) in [
                ("run", &g.endpoints.run),
                ("monitoring", &g.endpoints.monitoring),
                ("logging", &g.endpoints.logging),
            ] {
                if !valid_endpoint(u) {
                    v.error(
                        &p.key("endpoints").key(key),
                        format!("invalid endpoint {u:?}: expected a base URL like https://{key}.googleapis.com"),
                    );
                }
            }
        }
    }

    check_names(
        config
            .cloud_monitoring
            .iter()
            .enumerate()
            .map(|(i, m)| (i, m.name.as_str())),
        "cloud_monitoring",
        "name",
        v,
    );
    for (i, m) in config.cloud_monitoring.iter().enumerate() {
        let path = root.key("cloud_monitoring").index(i);
        if !m.metric.contains('/')
            || m.metric.contains(char::is_whitespace)
            || m.metric.contains('"')
        {
            v.error(
                &path.key("metric"),
                format!(
                    "invalid metric type {:?}: expected e.g. run.googleapis.com/request_count",
                    m.metric
                ),
            );
        }
        if m.interval.0 < std::time::Duration::from_secs(10) {
            v.error(
                &path.key("interval"),
                "interval must be at least 10s (Cloud Monitoring points are a minute apart)",
            );
        }
        if m.overlap < m.interval {
            v.error(
                &path.key("overlap"),
                format!(
                    "overlap {} is shorter than the interval {}; points would be missed",
                    m.overlap, m.interval
                ),
            );
        }
        if let Some(a) = &m.aggregation {
            let ap = path.key("aggregation");
            if let Some(period) = a.alignment_period {
                if period.0 < std::time::Duration::from_secs(60) {
                    v.error(
                        &ap.key("alignment_period"),
                        "alignment_period must be at least 60s",
                    );
                }
            }
            if let Some(al) = &a.per_series_aligner {
                if !ALIGNERS.contains(&al.as_str()) {
                    v.error(
                        &ap.key("per_series_aligner"),
                        format!("unknown aligner {al:?}; one of {}", ALIGNERS.join(", ")),
                    );
                }
            }
            if let Some(r) = &a.cross_series_reducer {
                if !REDUCERS.contains(&r.as_str()) {
                    v.error(
                        &ap.key("cross_series_reducer"),
                        format!("unknown reducer {r:?}; one of {}", REDUCERS.join(", ")),
                    );
                } else if r != "REDUCE_NONE"
                    && a.per_series_aligner.as_deref() == Some("ALIGN_NONE")
                {
                    v.error(
                        &ap.key("cross_series_reducer"),
                        "a cross-series reducer needs an aligner other than ALIGN_NONE",
                    );
                }
            }
            for (j, f) in a.group_by_fields.iter().enumerate() {
                if f.trim().is_empty() {
                    v.error(
                        &ap.key("group_by_fields").index(j),
                        "group_by_fields entries must not be empty",
                    );
                }
            }
        }
    }

    check_names(
        config
            .cloud_logging
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.name.as_str())),
        "cloud_logging",
        "name",
        v,
    );
    let mut calls_per_minute = 0.0;
    for (i, l) in config.cloud_logging.iter().enumerate() {
        let path = root.key("cloud_logging").index(i);
        if l.filter.trim().is_empty() {
            v.error(
                &path.key("filter"),
                "filter must not be empty (it would read every log of the project)",
            );
        }
        if l.interval.0 < std::time::Duration::from_secs(1) {
            v.error(&path.key("interval"), "interval must be at least 1s");
        } else {
            calls_per_minute += 60.0 / l.interval.0.as_secs_f64();
        }
        if l.max_catch_up.0.is_zero() {
            v.error(
                &path.key("max_catch_up"),
                "max_catch_up must be greater than 0 (e.g. 15m): it is how far beyond the overlap a poll reads back after a gap",
            );
        }
    }
    if calls_per_minute > LOGGING_CALLS_PER_MINUTE {
        v.error(
            &root.key("cloud_logging"),
            format!(
                "these log queries need about {calls_per_minute:.0} entries.list calls a minute; Cloud Logging allows {LOGGING_CALLS_PER_MINUTE:.0} per project: lengthen their intervals"
            ),
        );
    }

    check_names(
        config
            .cloud_run
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.service.as_str())),
        "cloud_run",
        "service",
        v,
    );
    for (i, r) in config.cloud_run.iter().enumerate() {
        let path = root.key("cloud_run").index(i);
        if !r.service.is_empty() && !valid_service_name(&r.service) {
            v.error(
                &path.key("service"),
                format!("invalid service {:?}: expected projects/PROJECT/locations/REGION/services/NAME", r.service),
            );
        }
        if r.interval.0 < std::time::Duration::from_secs(1) {
            v.error(&path.key("interval"), "interval must be at least 1s");
        }
    }

    for (name, q) in &config.query_sources {
        if let QuerySourceConfig::CloudMonitoringPromql {
            project: Some(p), ..
        } = q
        {
            if !valid_project(p) {
                v.error(
                    &root.key("query_sources").key(name).key("project"),
                    format!("invalid project id {p:?}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{load_str, LocatedErrors};

    fn load(text: &str) -> Result<crate::config::LoadedConfig, LocatedErrors> {
        load_str(Path::new("/tmp/rg-gcp/rearguard.yaml"), text, |_| None)
    }

    #[test]
    fn a_full_google_section_loads() {
        let c = load(
            "gcp: {project: netra-staging}\n\
             cloud_monitoring:\n  - {name: req, metric: run.googleapis.com/request_count, aggregation: {alignment_period: 60s, cross_series_reducer: REDUCE_SUM, group_by_fields: [resource.labels.revision_name]}}\n\
             cloud_logging:\n  - {name: errors, filter: 'severity>=ERROR'}\n\
             cloud_run:\n  - service: projects/netra-staging/locations/us-central1/services/backend\n\
             query_sources:\n  gmp: {type: cloud_monitoring_promql}\n",
        )
        .unwrap()
        .config;
        assert_eq!(
            c.cloud_monitoring[0].overlap,
            crate::config::defaults::CLOUD_MONITORING_OVERLAP
        );
        assert_eq!(c.gcp.unwrap().credentials, "adc");
    }

    #[test]
    fn max_catch_up_defaults_to_15m_and_must_be_positive() {
        let c = load(
            "gcp: {project: p}\n\
             cloud_logging:\n  - {name: a, filter: 'severity>=ERROR'}\n  - {name: b, filter: 'severity>=ERROR', max_catch_up: 1h}\n",
        )
        .unwrap()
        .config;
        assert_eq!(
            c.cloud_logging[0].max_catch_up,
            crate::config::Dur::secs(15 * 60)
        );
        assert_eq!(
            c.cloud_logging[1].max_catch_up,
            crate::config::Dur::secs(3600)
        );

        let err = load(
            "gcp: {project: p}\n\
             cloud_logging:\n  - name: a\n    filter: 'severity>=ERROR'\n    max_catch_up: 0s\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rearguard.yaml:5:19: max_catch_up must be greater than 0"),
            "{err}"
        );
        let err = load(
            "gcp: {project: p}\n\
             cloud_logging:\n  - name: a\n    filter: 'severity>=ERROR'\n    max_catch_up: -15m\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rearguard.yaml:5:19"), "{err}");
        assert!(err.contains("-15m"), "{err}");
    }

    #[test]
    fn google_errors_are_located() {
        let err = load("cloud_run:\n  - service: backend\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("needs a gcp: section"), "{text}");
        assert!(text.contains(":2:14: invalid service"), "{text}");

        let err = load(
            "gcp:\n  project: Bad_Project\n  credentials: ./missing-key.json\n  endpoints: {run: 'not a url'}\n\
             cloud_monitoring:\n  - name: a\n    metric: request_count\n    aggregation: {alignment_period: 30s, per_series_aligner: ALIGN_WRONG}\n  - name: a\n    metric: run.googleapis.com/x\n\
             cloud_logging:\n  - {name: q1, filter: 'severity>=ERROR', interval: 1s}\n  - {name: q2, filter: '', interval: 1s}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            ":2:12: invalid project id",
            ":3:16: key file /tmp/rg-gcp/./missing-key.json does not exist",
            ":4:20: invalid endpoint",
            ":7:13: invalid metric type",
            "alignment_period must be at least 60s",
            "unknown aligner \"ALIGN_WRONG\"",
            ":9:11: name \"a\" is used twice",
            "filter must not be empty",
            "need about 120 entries.list calls a minute",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}

//! `route:`, `inhibit_rules:` and `time_intervals:`, in Alertmanager's format.
//! (The dispatch issue owns the semantics; this is the shape.)

use serde::Deserialize;

use super::duration::Dur;

#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub receiver: Option<String>,
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub matchers: Vec<String>,
    #[serde(default)]
    pub r#continue: bool,
    #[serde(default)]
    pub group_wait: Option<Dur>,
    #[serde(default)]
    pub group_interval: Option<Dur>,
    #[serde(default)]
    pub repeat_interval: Option<Dur>,
    #[serde(default)]
    pub mute_time_intervals: Vec<String>,
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    #[serde(default)]
    pub source_matchers: Vec<String>,
    #[serde(default)]
    pub target_matchers: Vec<String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalConfig {
    pub name: String,
    #[serde(default)]
    pub time_intervals: Vec<serde_yaml_ng::Value>,
}

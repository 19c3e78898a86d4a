//! `route:`, `inhibit_rules:` and `time_intervals:`, in Alertmanager's format,
//! and their validation (every error located as file:line:col).

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::duration::Dur;
use super::{valid_label_name, Config, Validator, YamlPath};
use crate::matchers::Matchers;
use crate::time_interval::{FieldStep, TimeInterval};
// The interval specs live with their compiler (a leaf that dispatch and
// actions use too); their config paths stay here.
pub use crate::time_interval::{RangeValue, TimeIntervalConfig, TimeIntervalSpec, TimeRangeSpec};

#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub receiver: Option<String>,
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Deprecated in Alertmanager but still accepted: equality matchers.
    #[serde(default, rename = "match")]
    pub match_eq: BTreeMap<String, String>,
    /// Deprecated in Alertmanager but still accepted: regex matchers.
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
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

#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    #[serde(default)]
    pub source_matchers: Vec<String>,
    #[serde(default)]
    pub target_matchers: Vec<String>,
    #[serde(default)]
    pub equal: Vec<String>,
    /// Deprecated forms, still accepted as Alertmanager does.
    #[serde(default)]
    pub source_match: BTreeMap<String, String>,
    #[serde(default)]
    pub source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    pub target_match: BTreeMap<String, String>,
    #[serde(default)]
    pub target_match_re: BTreeMap<String, String>,
}

impl RouteConfig {
    /// All matchers of this route: `matchers`, then `match`, then `match_re`.
    pub fn all_matchers(&self) -> Result<Matchers, String> {
        let mut ms = Matchers::parse_lines(&self.matchers)?;
        ms.0.extend(map_matchers(&self.match_eq, &self.match_re)?.0);
        Ok(ms)
    }
}

impl InhibitRuleConfig {
    pub fn all_source_matchers(&self) -> Result<Matchers, String> {
        let mut ms = Matchers::parse_lines(&self.source_matchers)?;
        ms.0.extend(map_matchers(&self.source_match, &self.source_match_re)?.0);
        Ok(ms)
    }
    pub fn all_target_matchers(&self) -> Result<Matchers, String> {
        let mut ms = Matchers::parse_lines(&self.target_matchers)?;
        ms.0.extend(map_matchers(&self.target_match, &self.target_match_re)?.0);
        Ok(ms)
    }
}

fn map_matchers(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
) -> Result<Matchers, String> {
    use crate::matchers::{MatchType, Matcher};
    let mut out = Vec::new();
    for (k, v) in eq {
        out.push(Matcher::new(k, MatchType::Equal, v)?);
    }
    for (k, v) in re {
        out.push(Matcher::new(k, MatchType::Regex, v)?);
    }
    Ok(Matchers(out))
}

/// Validates `route`, `inhibit_rules` and `time_intervals` against each other
/// and `receivers`.
pub fn validate(config: &Config, v: &mut Validator) {
    let root = YamlPath::root();
    let mut interval_names = HashSet::new();
    for (i, ti) in config.time_intervals.iter().enumerate() {
        let path = root.key("time_intervals").index(i);
        if ti.name.is_empty() {
            v.error(&path.key("name"), "time interval name must not be empty");
        } else if !interval_names.insert(ti.name.as_str()) {
            v.error(
                &path.key("name"),
                format!("duplicate time interval name {:?}", ti.name),
            );
        }
        for (j, spec) in ti.time_intervals.iter().enumerate() {
            let spec_path = path.key("time_intervals").index(j);
            if let Err((sub, msg)) = TimeInterval::from_spec(spec) {
                let located = sub.steps().iter().fold(spec_path, |p, step| match step {
                    FieldStep::Key(k) => p.key(k),
                    FieldStep::Index(i) => p.index(*i),
                });
                v.error(&located, msg);
            }
        }
    }
    let receivers: HashSet<&str> = config.receivers.iter().map(|r| r.name.as_str()).collect();
    if let Some(route) = &config.route {
        let path = root.key("route");
        if route.receiver.is_none() {
            v.error(
                &path,
                "the root route must name a receiver (add `receiver:`)",
            );
        }
        if !route.matchers.is_empty() || !route.match_eq.is_empty() || !route.match_re.is_empty() {
            v.error(
                &path.key("matchers"),
                "the root route must not have any matchers (it matches every alert)",
            );
        }
        if route.r#continue {
            v.error(
                &path.key("continue"),
                "the root route cannot have `continue`",
            );
        }
        if !route.mute_time_intervals.is_empty() {
            v.error(
                &path.key("mute_time_intervals"),
                "the root route must not have any mute time intervals",
            );
        }
        if !route.active_time_intervals.is_empty() {
            v.error(
                &path.key("active_time_intervals"),
                "the root route must not have any active time intervals",
            );
        }
        validate_route(route, &path, &receivers, &interval_names, v);
    }
    for (i, rule) in config.inhibit_rules.iter().enumerate() {
        let path = root.key("inhibit_rules").index(i);
        check_matcher_lines(&rule.source_matchers, &path.key("source_matchers"), v);
        check_matcher_lines(&rule.target_matchers, &path.key("target_matchers"), v);
        if let Err(e) = map_matchers(&rule.source_match, &rule.source_match_re) {
            v.error(&path.key("source_match_re"), e);
        }
        if let Err(e) = map_matchers(&rule.target_match, &rule.target_match_re) {
            v.error(&path.key("target_match_re"), e);
        }
        for (j, name) in rule.equal.iter().enumerate() {
            if !valid_label_name(name) {
                v.error(
                    &path.key("equal").index(j),
                    format!("invalid label name {name:?} in `equal`"),
                );
            }
        }
    }
}

fn check_matcher_lines(lines: &[String], path: &YamlPath, v: &mut Validator) {
    for (i, line) in lines.iter().enumerate() {
        if let Err(e) = crate::matchers::parse_matchers(line) {
            v.error(&path.index(i), e);
        }
    }
}

fn validate_route(
    route: &RouteConfig,
    path: &YamlPath,
    receivers: &HashSet<&str>,
    intervals: &HashSet<&str>,
    v: &mut Validator,
) {
    if let Some(r) = &route.receiver {
        if !receivers.contains(r.as_str()) {
            v.error(
                &path.key("receiver"),
                format!("receiver {r:?} is not defined in `receivers:`"),
            );
        }
    }
    check_matcher_lines(&route.matchers, &path.key("matchers"), v);
    if let Err(e) = map_matchers(&route.match_eq, &route.match_re) {
        v.error(&path.key("match_re"), e);
    }
    if let Some(group_by) = &route.group_by {
        let has_all = group_by.iter().any(|g| g == "...");
        for (i, g) in group_by.iter().enumerate() {
            let p = path.key("group_by").index(i);
            if g == "..." {
                if group_by.len() > 1 {
                    v.error(&p, "cannot have grouping labels together with '...' (it groups by every label)");
                }
            } else if !has_all && !valid_label_name(g) {
                v.error(&p, format!("invalid label name {g:?} in group_by"));
            }
        }
        let mut seen = HashSet::new();
        for (i, g) in group_by.iter().enumerate() {
            if !seen.insert(g) {
                v.error(
                    &path.key("group_by").index(i),
                    format!("duplicate label {g:?} in group_by"),
                );
            }
        }
    }
    for (key, d) in [
        ("group_interval", route.group_interval),
        ("repeat_interval", route.repeat_interval),
    ] {
        if matches!(d, Some(d) if d.0.is_zero()) {
            v.error(&path.key(key), format!("{key} cannot be zero"));
        }
    }
    for (key, names) in [
        ("mute_time_intervals", &route.mute_time_intervals),
        ("active_time_intervals", &route.active_time_intervals),
    ] {
        for (i, n) in names.iter().enumerate() {
            if !intervals.contains(n.as_str()) {
                v.error(
                    &path.key(key).index(i),
                    format!("time interval {n:?} is not defined in `time_intervals:`"),
                );
            }
        }
    }
    for (i, child) in route.routes.iter().enumerate() {
        validate_route(child, &path.key("routes").index(i), receivers, intervals, v);
    }
}

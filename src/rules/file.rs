//! Prometheus rule files, parsed as strictly as `promtool check rules`, with
//! every error located at file:line:col.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value as Yaml;

use crate::config::duration::parse_duration;
use crate::config::locate::{from_yaml_error, LocatedError, Locator, Pos, YamlPath};
use crate::config::valid_label_name;
use crate::template;

/// A parsed rule file.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleFile {
    pub path: PathBuf,
    pub groups: Vec<RuleGroup>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleGroup {
    pub file: PathBuf,
    pub name: String,
    /// `interval:`; `None` means the global evaluation interval.
    pub interval: Option<Duration>,
    pub query_offset: Option<Duration>,
    /// 0 means no limit.
    pub limit: usize,
    pub labels: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub kind: RuleKind,
    pub expr: String,
    pub labels: BTreeMap<String, String>,
    /// Line of the rule in its file (for messages).
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    Recording {
        record: String,
    },
    Alerting {
        alert: String,
        for_: Duration,
        keep_firing_for: Duration,
        annotations: BTreeMap<String, String>,
    },
}

impl Rule {
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording { record } => record,
            RuleKind::Alerting { alert, .. } => alert,
        }
    }
    pub fn is_alerting(&self) -> bool {
        matches!(self.kind, RuleKind::Alerting { .. })
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ParseOptions {
    /// Accept unknown keys (`promtool --ignore-unknown-fields`).
    pub ignore_unknown_fields: bool,
}

const GROUP_KEYS: &[&str] = &[
    "name",
    "interval",
    "query_offset",
    "limit",
    "labels",
    "rules",
];
const RULE_KEYS: &[&str] = &[
    "record",
    "alert",
    "expr",
    "for",
    "keep_firing_for",
    "labels",
    "annotations",
];

struct Ctx<'a> {
    file: &'a Path,
    loc: Locator,
    errors: Vec<LocatedError>,
    opts: ParseOptions,
}

impl Ctx<'_> {
    fn at(&mut self, pos: Pos, msg: impl Into<String>) {
        self.errors.push(LocatedError::new(self.file, pos, msg));
    }
    fn err(&mut self, path: &YamlPath, msg: impl Into<String>) {
        let pos = self.loc.value(path);
        self.at(pos, msg);
    }
    fn key_err(&mut self, path: &YamlPath, msg: impl Into<String>) {
        let pos = self.loc.key(path);
        self.at(pos, msg);
    }

    /// The string form of a scalar (YAML numbers and booleans decode into Go strings too).
    fn scalar(&mut self, v: &Yaml, path: &YamlPath, what: &str) -> Option<String> {
        match v {
            Yaml::String(s) => Some(s.clone()),
            Yaml::Number(n) => Some(n.to_string()),
            Yaml::Bool(b) => Some(b.to_string()),
            Yaml::Null => Some(String::new()),
            _ => {
                self.err(path, format!("{what} must be a string"));
                None
            }
        }
    }

    fn duration(&mut self, v: &Yaml, path: &YamlPath, what: &str) -> Option<Duration> {
        let s = match v {
            Yaml::String(s) => s.clone(),
            Yaml::Number(n) => n.to_string(),
            _ => {
                self.err(path, format!("{what} must be a duration such as 5m"));
                return None;
            }
        };
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, format!("{what}: {e}"));
                None
            }
        }
    }

    fn mapping<'v>(
        &mut self,
        v: &'v Yaml,
        path: &YamlPath,
        what: &str,
    ) -> Option<&'v serde_yaml_ng::Mapping> {
        match v {
            Yaml::Mapping(m) => Some(m),
            Yaml::Null => None,
            _ => {
                self.err(path, format!("{what} must be a mapping"));
                None
            }
        }
    }

    /// Walks a mapping's string keys, reporting unknown and non-string keys.
    fn entries<'v>(
        &mut self,
        m: &'v serde_yaml_ng::Mapping,
        path: &YamlPath,
        allowed: &[&str],
        what: &str,
    ) -> Vec<(&'v str, &'v Yaml)> {
        let mut out = Vec::new();
        for (k, v) in m {
            let Some(k) = k.as_str() else {
                self.err(path, format!("{what} keys must be strings"));
                continue;
            };
            if !allowed.contains(&k) {
                if !self.opts.ignore_unknown_fields {
                    self.key_err(
                        &path.key(k),
                        format!(
                            "field {k} not found in {what} (allowed: {})",
                            allowed.join(", ")
                        ),
                    );
                }
                continue;
            }
            out.push((k, v));
        }
        out
    }

    fn string_map(&mut self, v: &Yaml, path: &YamlPath, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(m) = self.mapping(v, path, what) else {
            return out;
        };
        for (k, val) in m {
            let Some(k) = k.as_str() else {
                self.err(path, format!("{what} keys must be strings"));
                continue;
            };
            if let Some(s) = self.scalar(val, &path.key(k), what) {
                out.insert(k.to_string(), s);
            }
        }
        out
    }
}

/// Legacy Prometheus metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses and validates one rule file's text.
pub fn parse_rule_file(
    path: &Path,
    text: &str,
    opts: ParseOptions,
) -> Result<RuleFile, Vec<LocatedError>> {
    crate::config::locate::check_yaml_limits(path, text).map_err(|e| vec![e])?;
    let doc: Yaml = if text.trim().is_empty() {
        Yaml::Null
    } else {
        match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(e) => return Err(vec![from_yaml_error(path, &e)]),
        }
    };
    let mut cx = Ctx {
        file: path,
        loc: Locator::new(text),
        errors: Vec::new(),
        opts,
    };
    let root = YamlPath::root();
    let mut groups = Vec::new();
    if let Some(m) = cx.mapping(&doc, &root, "a rule file") {
        for (k, v) in cx.entries(m, &root, &["groups"], "the rule file") {
            debug_assert_eq!(k, "groups");
            let gpath = root.key("groups");
            match v {
                Yaml::Sequence(seq) => {
                    let mut names = HashSet::new();
                    for (i, g) in seq.iter().enumerate() {
                        if let Some(group) = parse_group(&mut cx, g, &gpath.index(i)) {
                            if !names.insert(group.name.clone()) {
                                cx.err(
                                    &gpath.index(i).key("name"),
                                    format!(
                                        "groupname: {:?} is repeated in the same file",
                                        group.name
                                    ),
                                );
                            }
                            groups.push(group);
                        }
                    }
                }
                Yaml::Null => {}
                _ => cx.err(&gpath, "groups must be a list"),
            }
        }
    }
    if cx.errors.is_empty() {
        Ok(RuleFile {
            path: path.to_path_buf(),
            groups,
        })
    } else {
        Err(cx.errors)
    }
}

fn parse_group(cx: &mut Ctx, v: &Yaml, path: &YamlPath) -> Option<RuleGroup> {
    let m = match v {
        Yaml::Mapping(m) => m,
        _ => {
            cx.err(path, "a rule group must be a mapping with name and rules");
            return None;
        }
    };
    let mut group = RuleGroup {
        file: cx.file.to_path_buf(),
        name: String::new(),
        interval: None,
        query_offset: None,
        limit: 0,
        labels: BTreeMap::new(),
        rules: Vec::new(),
    };
    let mut rules_yaml = None;
    for (k, val) in cx.entries(m, path, GROUP_KEYS, "rule group") {
        let p = path.key(k);
        match k {
            "name" => group.name = cx.scalar(val, &p, "name").unwrap_or_default(),
            "interval" => group.interval = cx.duration(val, &p, "interval"),
            "query_offset" => group.query_offset = cx.duration(val, &p, "query_offset"),
            "limit" => match val {
                Yaml::Number(n) if n.as_u64().is_some() => {
                    group.limit = n.as_u64().unwrap_or(0) as usize
                }
                Yaml::Null => {}
                _ => cx.err(&p, "limit must be a non-negative integer"),
            },
            "labels" => {
                group.labels = cx.string_map(val, &p, "labels");
                for k in group.labels.keys() {
                    if !valid_label_name(k) || k == "__name__" {
                        cx.key_err(&p.key(k), format!("invalid label name: {k}"));
                    }
                }
            }
            "rules" => rules_yaml = Some(val),
            _ => {}
        }
    }
    if group.name.is_empty() {
        cx.err(path, "Groupname must not be empty");
    }
    if group.interval == Some(Duration::ZERO) {
        cx.err(
            &path.key("interval"),
            "interval must be greater than 0 (omit it to use the global evaluation interval)",
        );
    }
    let rpath = path.key("rules");
    match rules_yaml {
        Some(Yaml::Sequence(seq)) => {
            for (i, r) in seq.iter().enumerate() {
                if let Some(rule) = parse_rule(cx, r, &rpath.index(i), &group.name) {
                    group.rules.push(rule);
                }
            }
        }
        Some(Yaml::Null) | None => {}
        Some(_) => cx.err(&rpath, "rules must be a list"),
    }
    Some(group)
}

fn parse_rule(cx: &mut Ctx, v: &Yaml, path: &YamlPath, group: &str) -> Option<Rule> {
    let m = match v {
        Yaml::Mapping(m) => m,
        _ => {
            cx.err(
                path,
                "a rule must be a mapping with record or alert, and expr",
            );
            return None;
        }
    };
    let before = cx.errors.len();
    let (mut record, mut alert, mut expr) = (None, None, None);
    let (mut for_, mut keep) = (Duration::ZERO, Duration::ZERO);
    let (mut labels, mut annotations) = (BTreeMap::new(), BTreeMap::new());
    let mut seen_for = false;
    let mut seen_keep = false;
    for (k, val) in cx.entries(m, path, RULE_KEYS, "rule") {
        let p = path.key(k);
        match k {
            "record" => record = cx.scalar(val, &p, "record"),
            "alert" => alert = cx.scalar(val, &p, "alert"),
            "expr" => expr = cx.scalar(val, &p, "expr"),
            "for" => {
                seen_for = true;
                for_ = cx.duration(val, &p, "for").unwrap_or_default();
            }
            "keep_firing_for" => {
                seen_keep = true;
                keep = cx.duration(val, &p, "keep_firing_for").unwrap_or_default();
            }
            "labels" => labels = cx.string_map(val, &p, "labels"),
            "annotations" => annotations = cx.string_map(val, &p, "annotations"),
            _ => {}
        }
    }
    let record = record.filter(|s| !s.is_empty());
    let alert = alert.filter(|s| !s.is_empty());
    let expr = expr.unwrap_or_default();
    match (&record, &alert) {
        (Some(_), Some(_)) => cx.err(path, "only one of 'record' and 'alert' must be set"),
        (None, None) => cx.err(path, "one of 'record' or 'alert' must be set"),
        _ => {}
    }
    if expr.trim().is_empty() {
        cx.err(path, "field 'expr' must be set in rule");
    } else if let Err(e) = crate::promql::parse(&expr) {
        let msg = match e {
            crate::promql::QueryError::Parse(m) => m,
            other => other.to_string(),
        };
        cx.err(
            &path.key("expr"),
            format!("could not parse expression: {}", msg.trim()),
        );
    }
    if let Some(r) = &record {
        if !annotations.is_empty() {
            cx.key_err(
                &path.key("annotations"),
                "invalid field 'annotations' in recording rule",
            );
        }
        if seen_for && !for_.is_zero() {
            cx.key_err(&path.key("for"), "invalid field 'for' in recording rule");
        }
        if seen_keep && !keep.is_zero() {
            cx.key_err(
                &path.key("keep_firing_for"),
                "invalid field 'keep_firing_for' in recording rule",
            );
        }
        if !valid_metric_name(r) {
            let hint = if r.contains('{') {
                " (braces present in the recording rule name; should it be in expr?)"
            } else {
                ""
            };
            cx.err(
                &path.key("record"),
                format!("invalid recording rule name: {r}{hint}"),
            );
        }
    }
    for k in labels.keys() {
        if !valid_label_name(k) || k == "__name__" {
            cx.key_err(
                &path.key("labels").key(k),
                format!("invalid label name: {k}"),
            );
        }
    }
    for k in annotations.keys() {
        if !valid_label_name(k) {
            cx.key_err(
                &path.key("annotations").key(k),
                format!("invalid annotation name: {k}"),
            );
        }
    }
    if let Some(a) = &alert {
        let tname = format!("__alert_{a}");
        for (what, map) in [("labels", &labels), ("annotations", &annotations)] {
            for (k, text) in map {
                if let Err(e) = template::check_alert_template(&tname, text) {
                    cx.err(
                        &path.key(what).key(k),
                        format!("group {group:?}, rule {a:?}: {what}.{k}: {e}"),
                    );
                }
            }
        }
    }
    if cx.errors.len() > before {
        return None;
    }
    let line = cx.loc.value(path).line;
    let kind = match (record, alert) {
        (Some(record), None) => RuleKind::Recording { record },
        (None, Some(alert)) => RuleKind::Alerting {
            alert,
            for_,
            keep_firing_for: keep,
            annotations,
        },
        _ => return None,
    };
    Some(Rule {
        kind,
        expr,
        labels,
        line,
    })
}

/// Reads and parses every file; all errors of all files are returned together.
pub fn load_rule_files(
    paths: &[PathBuf],
    opts: ParseOptions,
) -> Result<Vec<RuleFile>, Vec<LocatedError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::read_to_string(p) {
            Ok(text) => match parse_rule_file(p, &text, opts) {
                Ok(f) => files.push(f),
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.push(LocatedError::new(
                p,
                Pos { line: 0, col: 0 },
                format!("cannot read rule file: {e}"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// What `rearguard check` runs over the config's rule files.
pub fn check_files(paths: &[PathBuf]) -> Vec<LocatedError> {
    match load_rule_files(paths, ParseOptions::default()) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuleFile, Vec<LocatedError>> {
        parse_rule_file(Path::new("r.yaml"), text, ParseOptions::default())
    }

    fn errors(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn parses_a_full_file() {
        let f = parse(
            "groups:\n- name: g\n  interval: 30s\n  query_offset: 1m\n  limit: 10\n  labels: {team: a}\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    keep_firing_for: 2m\n    labels: {severity: critical}\n    annotations: {summary: '{{ $labels.job }} down'}\n",
        )
        .unwrap();
        let g = &f.groups[0];
        assert_eq!(g.interval, Some(Duration::from_secs(30)));
        assert_eq!(g.query_offset, Some(Duration::from_secs(60)));
        assert_eq!(g.limit, 10);
        assert_eq!(g.rules.len(), 2);
        assert_eq!(g.rules[1].name(), "Down");
        assert_eq!(g.rules[1].line, 10);
        match &g.rules[1].kind {
            RuleKind::Alerting {
                for_,
                keep_firing_for,
                ..
            } => {
                assert_eq!(*for_, Duration::from_secs(300));
                assert_eq!(*keep_firing_for, Duration::from_secs(120));
            }
            _ => panic!("alerting expected"),
        }
    }

    #[test]
    fn located_errors() {
        let e = errors("groups:\n- name: g\n  namespace: x\n  rules:\n  - alert: A\n    expr: 'up +'\n    for: 5x\n");
        assert!(
            e.iter()
                .any(|m| m.starts_with("r.yaml:3:3: field namespace not found")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("r.yaml:6:11: could not parse expression")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("r.yaml:7:10: for: not a valid duration")),
            "{e:?}"
        );
    }

    #[test]
    fn promtool_rejections() {
        let dup = errors("groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n");
        assert!(
            dup[0].contains("r.yaml:4:9: groupname: \"g\" is repeated"),
            "{dup:?}"
        );
        assert!(errors("groups:\n- name: g\n  rules:\n  - expr: up\n")[0]
            .contains("one of 'record' or 'alert' must be set"));
        assert!(errors(
            "groups:\n- name: g\n  rules:\n  - record: a\n    alert: b\n    expr: up\n"
        )[0]
        .contains("only one of"));
        assert!(errors("groups:\n- name: g\n  rules:\n  - record: a\n")[0]
            .contains("field 'expr' must be set"));
        assert!(errors("groups:\n- rules: []\n")[0].contains("Groupname must not be empty"));
        assert!(
            errors("groups:\n- name: g\n  rules:\n  - record: 'a{b}'\n    expr: up\n")[0]
                .contains("invalid recording rule name")
        );
        assert!(
            errors("groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n    for: 5m\n")[0]
                .contains("invalid field 'for' in recording rule")
        );
        assert!(errors("groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    labels: {'bad-name': x}\n")[0].contains("invalid label name: bad-name"));
        let t = errors("groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    annotations:\n      s: '{{ $labels.x '\n");
        assert!(
            t[0].starts_with("r.yaml:7:10:") && t[0].contains("template"),
            "{t:?}"
        );
        assert!(errors("groups:\n- name: g\n  limit: -1\n  rules: []\n")[0].contains("limit"));
        assert!(errors("groups: [\n")[0].starts_with("r.yaml:"));
    }

    #[test]
    fn ignore_unknown_fields() {
        let text =
            "groups:\n- name: g\n  ownership: {a: b}\n  rules:\n  - record: x\n    expr: '1'\n";
        assert!(parse(text).is_err());
        let f = parse_rule_file(
            Path::new("r"),
            text,
            ParseOptions {
                ignore_unknown_fields: true,
            },
        )
        .unwrap();
        assert_eq!(f.groups[0].rules.len(), 1);
    }

    #[test]
    fn numeric_scalars_are_strings() {
        let f = parse(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: 1\n    labels: {code: 500}\n",
        )
        .unwrap();
        assert_eq!(f.groups[0].rules[0].expr, "1");
        assert_eq!(f.groups[0].rules[0].labels["code"], "500");
    }
}

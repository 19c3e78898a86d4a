//! Go `text/template`, the subset Prometheus alert templates use, with
//! Prometheus's template functions and data (`$labels`, `$value`,
//! `$externalLabels`, `$externalURL`).
//!
//! Written here rather than taken from a crate so that numbers print exactly
//! as Go prints them (`{{ $value }}` of 1e6 is `1e+06`) and so that missing
//! label keys expand to "" (Prometheus runs templates with `missingkey=zero`).
//!
//! By stage: [`lex`] (source to tokens), [`parse`] (tokens to a [`Template`]),
//! [`exec`] (running it), [`functions`] (Go's and Prometheus's formatting),
//! [`gofmt`] (Go's number formatting). Used by rule templates and notify.

use std::collections::BTreeMap;
use std::fmt::Write as _;

mod exec;
mod functions;
pub(crate) mod gofmt;
mod lex;
mod parse;

use gofmt::Spec;

pub use exec::Funcs;
pub use functions::{
    html_escape, humanize, humanize1024, humanize_duration, humanize_timestamp, sprintf,
};
pub use parse::{Template, MAX_TEMPLATE_DEPTH};

use crate::labels::Labels;
use functions::*;
use lex::*;
use parse::*;

/// A template that does not parse, or fails while running.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template: {name}:{line}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub line: usize,
    pub message: String,
}

/// A value inside a running template.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Map(BTreeMap<String, Value>),
    List(Vec<Value>),
    /// One sample of a `query` result: `.Labels` and `.Value`.
    Sample {
        labels: BTreeMap<String, String>,
        value: f64,
    },
}

/// Notification data (built as JSON) as template values.
impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        use serde_json::Value as J;
        match v {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(a) => Value::List(a.iter().map(Value::from).collect()),
            J::Object(o) => {
                Value::Map(o.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect())
            }
        }
    }
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Sample { .. } => true,
        }
    }

    /// Go's `%v`.
    fn print(&self) -> String {
        match self {
            Value::Nil => "<no value>".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => gofmt::format_v(*f),
            Value::Str(s) => s.clone(),
            Value::Map(m) => {
                let inner: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.print()))
                    .collect();
                format!("map[{}]", inner.join(" "))
            }
            Value::List(l) => {
                let inner: Vec<String> = l.iter().map(Value::print).collect();
                format!("[{}]", inner.join(" "))
            }
            Value::Sample { labels, value } => {
                let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{map[{}] {}}}", inner.join(" "), gofmt::format_v(*value))
            }
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Map(_) => "map",
            Value::List(_) => "slice",
            Value::Sample { .. } => "*template.sample",
        }
    }

    /// Prometheus's `convertToFloat`: numbers, and strings that parse as one.
    fn to_float(&self) -> Result<f64, String> {
        match self {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            Value::Str(s) => parse_go_float(s)
                .ok_or_else(|| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
            other => Err(format!("can't convert {} to float", other.type_name())),
        }
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// The variables and data Prometheus gives alert templates.
pub struct AlertTemplateData<'a> {
    pub labels: &'a Labels,
    pub value: f64,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
}

/// The variable names Prometheus predefines for alert templates.
pub const PRESET_VARS: &[&str] = &["labels", "value", "externalLabels", "externalURL"];

fn string_map<'a>(it: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Map(
        it.map(|(k, v)| (k.to_string(), Value::Str(v.to_string())))
            .collect(),
    )
}

/// Expands an alert label or annotation template the way Prometheus does. On
/// error the result is `<error expanding template: …>`, never a failure.
pub fn expand_alert_template(
    name: &str,
    text: &str,
    data: &AlertTemplateData<'_>,
    funcs: &Funcs<'_>,
) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    let result = Template::parse(name, text, PRESET_VARS).and_then(|t| {
        let labels = string_map(data.labels.iter().map(|l| (&*l.name, &*l.value)));
        let ext = string_map(
            data.external_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let dot = Value::Map(BTreeMap::from([
            ("Labels".to_string(), labels.clone()),
            ("ExternalLabels".to_string(), ext.clone()),
            (
                "ExternalURL".to_string(),
                Value::Str(data.external_url.to_string()),
            ),
            ("Value".to_string(), Value::Float(data.value)),
        ]));
        let vars = vec![
            ("labels".to_string(), labels),
            ("externalLabels".to_string(), ext),
            (
                "externalURL".to_string(),
                Value::Str(data.external_url.to_string()),
            ),
            ("value".to_string(), Value::Float(data.value)),
        ];
        t.execute(dot, vars, funcs)
    });
    match result {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: error executing template {name}: {e}>"),
    }
}

/// Checks that an alert template parses (what `promtool check rules` does).
pub fn check_alert_template(name: &str, text: &str) -> Result<(), TemplateError> {
    Template::parse(name, text, PRESET_VARS).map(|_| ())
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    #[test]
    fn deep_blocks_parentheses_and_else_if_chains_are_refused_not_overflowed() {
        let n = 50_000;
        for text in [
            format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n)),
            format!("{}x{}", "{{if true}}".repeat(n), "{{end}}".repeat(n)),
            format!(
                "{{{{if false}}}}{}x{{{{end}}}}",
                "{{else if false}}".repeat(n)
            ),
        ] {
            let err = Template::parse("t", &text, &[]).unwrap_err();
            assert!(err.message.contains("nests deeper than 100"), "{err}");
        }
        let ok = format!("{}x{}", "{{if true}}".repeat(99), "{{end}}".repeat(99));
        assert!(Template::parse("t", &ok, &[]).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str, labels: &[(&str, &str)], value: f64) -> String {
        let labels = Labels::from_pairs(labels.iter().copied());
        let ext = BTreeMap::from([("cluster".to_string(), "staging".to_string())]);
        let data = AlertTemplateData {
            labels: &labels,
            value,
            external_labels: &ext,
            external_url: "http://rg:9464",
        };
        expand_alert_template("t", text, &data, &Funcs::default())
    }

    #[test]
    fn labels_value_and_externals() {
        assert_eq!(
            expand(
                "Instance {{ $labels.instance }} down",
                &[("instance", "a:1")],
                0.0
            ),
            "Instance a:1 down"
        );
        assert_eq!(expand("{{ $labels.missing }}|", &[], 0.0), "|");
        assert_eq!(expand("{{ $value }}", &[], 1e6), "1e+06");
        assert_eq!(
            expand("{{ .Value }} {{ .Labels.job }}", &[("job", "j")], 0.25),
            "0.25 j"
        );
        assert_eq!(
            expand("{{ $externalLabels.cluster }} {{ $externalURL }}", &[], 0.0),
            "staging http://rg:9464"
        );
    }

    #[test]
    fn humanize_family() {
        assert_eq!(expand("{{ humanize 1234567.0 }}", &[], 0.0), "1.235M");
        assert_eq!(expand("{{ humanize 0.012 }}", &[], 0.0), "12m");
        assert_eq!(expand("{{ humanize 0 }}", &[], 0.0), "0");
        assert_eq!(expand("{{ humanize1024 1048576.0 }}", &[], 0.0), "1Mi");
        assert_eq!(expand("{{ humanizeDuration 3725 }}", &[], 0.0), "1h 2m 5s");
        assert_eq!(expand("{{ humanizeDuration 0.25 }}", &[], 0.0), "250ms");
        assert_eq!(expand("{{ humanizeDuration 12.5 }}", &[], 0.0), "12.5s");
        assert_eq!(
            expand("{{ $value | humanizePercentage }}", &[], 0.0523),
            "5.23%"
        );
        assert_eq!(
            expand("{{ humanizeTimestamp 1435065584.128 }}", &[], 0.0),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(expand("{{ \"1234\" | humanize }}", &[], 0.0), "1.234k");
    }

    #[test]
    fn control_flow_and_functions() {
        let t = "{{ if gt $value 0.5 }}high{{ else if gt $value 0.1 }}mid{{ else }}low{{ end }}";
        assert_eq!(expand(t, &[], 0.9), "high");
        assert_eq!(expand(t, &[], 0.2), "mid");
        assert_eq!(expand(t, &[], 0.0), "low");
        assert_eq!(
            expand(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                &[("a", "1"), ("b", "2")],
                0.0
            ),
            "a=1;b=2;"
        );
        assert_eq!(
            expand(
                "{{ with $labels.job }}job {{ . }}{{ else }}none{{ end }}",
                &[],
                0.0
            ),
            "none"
        );
        assert_eq!(
            expand("{{ printf \"%.2f%%\" $value }}", &[], 12.3456),
            "12.35%"
        );
        assert_eq!(
            expand(
                "{{ printf \"%s/%d/%5.1f|%-4s|\" \"x\" 3 2.25 \"ab\" }}",
                &[],
                0.0
            ),
            "x/3/  2.2|ab  |"
        );
        assert_eq!(
            expand(
                "{{ toUpper \"ab\" }} {{ \"hello world\" | title }} {{ toLower \"AB\" }}",
                &[],
                0.0
            ),
            "AB Hello World ab"
        );
        assert_eq!(
            expand(
                "{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}",
                &[("instance", "host:9090")],
                0.0
            ),
            "host"
        );
        assert_eq!(
            expand("{{ if match \"^a\" \"abc\" }}y{{ end }}", &[], 0.0),
            "y"
        );
        assert_eq!(expand("a  {{- $x := 3 }}  {{ $x -}}  !", &[], 0.0), "a  3!");
        assert_eq!(expand("a{{/* comment */}}b", &[], 0.0), "ab");
        assert_eq!(
            expand(
                "{{ and 1 0 }} {{ or 0 \"\" \"z\" }} {{ not true }}",
                &[],
                0.0
            ),
            "0 z false"
        );
        assert_eq!(
            expand(
                "{{ len $labels }} {{ index $labels \"a\" }}",
                &[("a", "v")],
                0.0
            ),
            "1 v"
        );
    }

    #[test]
    fn errors_parse_and_runtime() {
        assert!(check_alert_template("x", "{{ $labels.x }").is_err());
        assert!(check_alert_template("x", "{{ if true }}no end").is_err());
        assert!(check_alert_template("x", "{{ nosuchfunc 1 }}").is_err());
        assert!(check_alert_template("x", "{{ $undefined }}").is_err());
        assert!(check_alert_template("x", "{{ end }}").is_err());
        check_alert_template("x", "{{ $labels.instance }} {{ humanize $value }}").unwrap();
        let out = expand("{{ first 1 }}", &[], 0.0);
        assert!(out.starts_with("<error expanding template: "), "{out}");
    }

    #[test]
    fn query_functions() {
        let q = |_: &str| {
            Ok(vec![(
                BTreeMap::from([("job".to_string(), "x".to_string())]),
                2.5,
            )])
        };
        let funcs = Funcs {
            query: Some(&q),
            external_url: String::new(),
        };
        let labels = Labels::empty();
        let ext = BTreeMap::new();
        let data = AlertTemplateData {
            labels: &labels,
            value: 0.0,
            external_labels: &ext,
            external_url: "",
        };
        assert_eq!(
            expand_alert_template("t", "{{ with query \"up\" }}{{ . | first | value }} {{ . | first | label \"job\" }}{{ end }}", &data, &funcs),
            "2.5 x"
        );
        assert_eq!(
            expand_alert_template(
                "t",
                "{{ range query \"up\" }}{{ .Labels.job }}={{ .Value }}{{ end }}",
                &data,
                &funcs
            ),
            "x=2.5"
        );
    }

    fn notification_data() -> Value {
        Value::from(&serde_json::json!({
            "Status": "firing",
            "GroupLabels": {"a": "x", "b": "y"},
            "Subject": "<i>&",
            "Alerts": [
                {"Status": "firing", "Labels": {"alertname": "A"}, "Value": 3},
                {"Status": "resolved", "Labels": {"alertname": "B"}, "Value": 0}
            ]
        }))
    }

    fn run(text: &str, html: bool) -> String {
        let t = Template::parse("email", text, &[]).unwrap();
        let funcs = Funcs::default();
        let r = if html {
            t.execute_html(notification_data(), Vec::new(), &funcs)
        } else {
            t.execute(notification_data(), Vec::new(), &funcs)
        };
        r.unwrap()
    }

    #[test]
    fn alertmanager_notification_templates() {
        assert_eq!(
            run(
                "{{ .Status | toUpper }}:{{ range .Alerts }} {{ .Labels.alertname }}{{ if .Value }}={{ .Value }}{{ end }}{{ end }}\n{{- /* c */ -}}\n [{{ .GroupLabels.Values | join \",\" }}] {{ .Alerts | len }}",
                false
            ),
            "FIRING: A=3 B[x,y] 2"
        );
        // Alertmanager's Alerts.Firing / .Resolved and KV methods.
        assert_eq!(
            run("{{ range .Alerts.Firing }}{{ .Labels.alertname }}{{ end }}/{{ len .Alerts.Resolved }}", false),
            "A/1"
        );
        assert_eq!(
            run("{{ range .GroupLabels.SortedPairs }}{{ .Name }}={{ .Value }};{{ end }}{{ join \"+\" .GroupLabels.Names }}", false),
            "a=x;b=y;a+b"
        );
        assert_eq!(
            run(
                "{{ stringSlice \"a\" \"b\" | join \"-\" }}|{{ trimSpace \"  x \" }}",
                false
            ),
            "a-b|x"
        );
    }

    #[test]
    fn html_output_escapes_values_not_text_and_not_safe_html() {
        assert_eq!(
            run(
                "<b>{{ .Subject }}</b>{{ with .Missing }}{{ $.Subject }}{{ else }}none{{ end }}",
                true
            ),
            "<b>&lt;i&gt;&amp;</b>none"
        );
        assert_eq!(run("{{ .Subject | safeHtml }}", true), "<i>&");
        // In text output nothing is escaped.
        assert_eq!(run("{{ .Subject }}", false), "<i>&");
    }
}

//! A small subset of Go's text/template, enough for Alertmanager-style custom
//! `html`/`text` email bodies and header values, evaluated over JSON data.
//!
//! Supported: `{{ .Field.Sub }}`, `{{ $.Field }}`, `{{ . }}`, pipes into
//! `toUpper`, `toLower`, `title`, `len`, `join "sep"`; `{{ range .X }}…{{ else }}…{{ end }}`
//! (over lists and maps), `{{ if .X }}…{{ else }}…{{ end }}`, `{{ with .X }}…{{ end }}`,
//! `{{/* comments */}}` and `{{-`/`-}}` trimming. Anything else is a parse error
//! at config load, so an unsupported template never fails at delivery time.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Text(String),
    Output(Pipeline),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    If(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Clone, Debug, PartialEq)]
struct Pipeline {
    from_root: bool,
    path: Vec<String>,
    funcs: Vec<(String, Option<String>)>,
}

#[derive(Debug)]
enum Tok {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_left = after.starts_with('-') && after[1..].starts_with(char::is_whitespace);
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            out.push(Tok::Text(text.to_string()));
        }
        let body_start = if trim_left { 1 } else { 0 };
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed action: '{{' without '}}'".to_string())?;
        let mut body = &after[body_start..end];
        trim_next = false;
        if body.ends_with('-') && body[..body.len() - 1].ends_with(char::is_whitespace) {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push(Tok::Action(body.to_string()));
        }
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        out.push(Tok::Text(text.to_string()));
    }
    Ok(out)
}

fn parse_pipeline(s: &str) -> Result<Pipeline, String> {
    let mut parts = s.split('|').map(str::trim);
    let head = parts.next().unwrap_or("");
    let (from_root, path_str) = if head == "." {
        (false, "")
    } else if let Some(p) = head.strip_prefix("$.") {
        (true, p)
    } else if head == "$" {
        (true, "")
    } else if let Some(p) = head.strip_prefix('.') {
        (false, p)
    } else {
        return Err(format!(
            "unsupported expression {head:?}: only fields such as .Status or .Labels.alertname are supported"
        ));
    };
    let path: Vec<String> = if path_str.is_empty() {
        Vec::new()
    } else {
        path_str.split('.').map(str::to_string).collect()
    };
    if path
        .iter()
        .any(|p| p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        return Err(format!("invalid field path {head:?}"));
    }
    let mut funcs = Vec::new();
    for f in parts {
        let (name, arg) = match f.split_once(char::is_whitespace) {
            Some((n, a)) => (n, Some(a.trim())),
            None => (f, None),
        };
        match (name, arg) {
            ("toUpper" | "toLower" | "title" | "len", None) => funcs.push((name.to_string(), None)),
            ("join", Some(a)) if a.len() >= 2 && a.starts_with('"') && a.ends_with('"') => {
                funcs.push((name.to_string(), Some(a[1..a.len() - 1].to_string())))
            }
            _ => {
                return Err(format!(
                    "unsupported function {f:?} (supported: toUpper, toLower, title, len, join \"sep\")"
                ))
            }
        }
    }
    Ok(Pipeline {
        from_root,
        path,
        funcs,
    })
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let toks = lex(src)?;
        let mut it = toks.into_iter().peekable();
        let (nodes, end) = parse_nodes(&mut it)?;
        match end {
            None => Ok(Template { nodes }),
            Some(e) => Err(format!(
                "unexpected {{{{ {e} }}}} without a matching range/if/with"
            )),
        }
    }

    /// Renders as text; with `html_escape`, every value printed is HTML-escaped.
    pub fn render(&self, data: &Value, html_escape: bool) -> String {
        let mut out = String::new();
        render_nodes(&self.nodes, data, data, html_escape, &mut out);
        out
    }
}

type Toks = std::iter::Peekable<std::vec::IntoIter<Tok>>;

/// Parses nodes until `end` or `else` (returned) or the end of input (None).
fn parse_nodes(it: &mut Toks) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(tok) = it.next() {
        match tok {
            Tok::Text(t) => nodes.push(Node::Text(t)),
            Tok::Action(a) => {
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" | "else" => return Ok((nodes, Some(kw.to_string()))),
                    "range" | "if" | "with" => {
                        let p = parse_pipeline(rest)?;
                        let (body, end) = parse_nodes(it)?;
                        let else_body = match end.as_deref() {
                            Some("end") => Vec::new(),
                            Some("else") => {
                                let (eb, end2) = parse_nodes(it)?;
                                if end2.as_deref() != Some("end") {
                                    return Err(format!("{{{{ {kw} }}}} without {{{{ end }}}}"));
                                }
                                eb
                            }
                            _ => return Err(format!("{{{{ {kw} }}}} without {{{{ end }}}}")),
                        };
                        nodes.push(match kw {
                            "range" => Node::Range(p, body, else_body),
                            "if" => Node::If(p, body, else_body),
                            _ => Node::With(p, body, else_body),
                        });
                    }
                    _ => nodes.push(Node::Output(parse_pipeline(&a)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn eval(p: &Pipeline, dot: &Value, root: &Value) -> Value {
    let mut v = if p.from_root { root } else { dot };
    for k in &p.path {
        v = v.get(k).unwrap_or(&Value::Null);
    }
    let mut v = v.clone();
    for (f, arg) in &p.funcs {
        v = match f.as_str() {
            "toUpper" => Value::String(to_text(&v).to_uppercase()),
            "toLower" => Value::String(to_text(&v).to_lowercase()),
            "title" => Value::String(title(&to_text(&v))),
            "len" => Value::from(match &v {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.chars().count(),
                _ => 0,
            }),
            "join" => {
                let sep = arg.as_deref().unwrap_or("");
                let items: Vec<String> = match &v {
                    Value::Array(a) => a.iter().map(to_text).collect(),
                    Value::Object(o) => o.values().map(to_text).collect(),
                    other => vec![to_text(other)],
                };
                Value::String(items.join(sep))
            }
            _ => v,
        };
    }
    v
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(to_text).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", to_text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render_nodes(nodes: &[Node], dot: &Value, root: &Value, esc: bool, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Output(p) => {
                let s = to_text(&eval(p, dot, root));
                if esc {
                    out.push_str(&escape_html(&s));
                } else {
                    out.push_str(&s);
                }
            }
            Node::If(p, body, els) => {
                let v = eval(p, dot, root);
                render_nodes(if truthy(&v) { body } else { els }, dot, root, esc, out);
            }
            Node::With(p, body, els) => {
                let v = eval(p, dot, root);
                if truthy(&v) {
                    render_nodes(body, &v, root, esc, out);
                } else {
                    render_nodes(els, dot, root, esc, out);
                }
            }
            Node::Range(p, body, els) => {
                let v = eval(p, dot, root);
                let items: Vec<&Value> = match &v {
                    Value::Array(a) => a.iter().collect(),
                    Value::Object(o) => o.values().collect(),
                    _ => Vec::new(),
                };
                if items.is_empty() {
                    render_nodes(els, dot, root, esc, out);
                }
                for item in items {
                    render_nodes(body, item, root, esc, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_range_if_and_funcs() {
        let t = Template::parse(
            "{{ .Status | toUpper }}:{{ range .Alerts }} {{ .Labels.alertname }}{{ if .Value }}={{ .Value }}{{ end }}{{ end }}\n{{- /* c */ -}}\n [{{ .GroupLabels | join \",\" }}] {{ .Alerts | len }}",
        )
        .unwrap();
        let data = json!({
            "Status": "firing",
            "GroupLabels": {"a": "x", "b": "y"},
            "Alerts": [{"Labels": {"alertname": "A"}, "Value": 3}, {"Labels": {"alertname": "B"}, "Value": 0}]
        });
        assert_eq!(t.render(&data, false), "FIRING: A=3 B[x,y] 2");
    }

    #[test]
    fn html_escapes_values_not_text() {
        let t = Template::parse("<b>{{ .X }}</b>{{ with .Y }}{{ $.X }}{{ else }}none{{ end }}")
            .unwrap();
        assert_eq!(
            t.render(&json!({"X": "<i>&"}), true),
            "<b>&lt;i&gt;&amp;</b>none"
        );
    }

    #[test]
    fn rejects_unsupported() {
        assert!(Template::parse("{{ template \"x\" . }}")
            .unwrap_err()
            .contains("unsupported"));
        assert!(Template::parse("{{ range .A }}")
            .unwrap_err()
            .contains("without"));
        assert!(Template::parse("{{ end }}").is_err());
        assert!(Template::parse("{{ .A | printf \"%s\" }}")
            .unwrap_err()
            .contains("unsupported function"));
    }
}

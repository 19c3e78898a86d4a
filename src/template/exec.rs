//! Execution: walking the node tree against data, with Prometheus's functions.

use super::*;

impl Template {
    /// Runs the template with `dot` as `.` and the given variables.
    pub fn execute(
        &self,
        dot: Value,
        vars: Vec<(String, Value)>,
        funcs: &Funcs<'_>,
    ) -> Result<String, TemplateError> {
        self.run(dot, vars, funcs, false)
    }

    /// Like [`Template::execute`], for an HTML body: every value printed is
    /// HTML-escaped unless its pipeline ends in `safeHtml`. (Go's html/template
    /// also escapes by context, in attributes and scripts; this escapes alike
    /// everywhere, which is safe in element text and quoted attributes.)
    pub fn execute_html(
        &self,
        dot: Value,
        vars: Vec<(String, Value)>,
        funcs: &Funcs<'_>,
    ) -> Result<String, TemplateError> {
        self.run(dot, vars, funcs, true)
    }

    fn run(
        &self,
        dot: Value,
        vars: Vec<(String, Value)>,
        funcs: &Funcs<'_>,
        escape_html: bool,
    ) -> Result<String, TemplateError> {
        let mut ex = Exec {
            escape_html,
            name: &self.name,
            vars: vars
                .into_iter()
                .chain([(String::new(), dot.clone())])
                .collect(),
            funcs,
            out: String::new(),
            steps: 0,
        };
        ex.walk(&self.nodes, &dot)?;
        Ok(ex.out)
    }
}

/// Prometheus's template functions that need the outside world.
#[derive(Default)]
pub struct Funcs<'a> {
    /// Runs a PromQL instant query at the evaluation time (the `query` function).
    #[allow(clippy::type_complexity)]
    pub query: Option<&'a dyn Fn(&str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String>>,
    pub external_url: String,
}

pub(super) struct Exec<'a> {
    name: &'a str,
    escape_html: bool,
    vars: Vec<(String, Value)>,
    funcs: &'a Funcs<'a>,
    out: String,
    steps: usize,
}

pub(super) const MAX_STEPS: usize = 100_000;

impl<'a> Exec<'a> {
    pub(super) fn err(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line,
            message: message.into(),
        }
    }

    pub(super) fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        for n in nodes {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(self.err(0, "template too expensive"));
            }
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        let text = v.print();
                        if self.escape_html && !p.ends_in_safe_html() {
                            self.out.push_str(&html_escape(&text));
                        } else {
                            self.out.push_str(&text);
                        }
                    }
                }
                Node::If {
                    pipe,
                    then,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let r = if v.truthy() {
                        self.walk(then, dot)
                    } else {
                        self.walk(otherwise, dot)
                    };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::With {
                    pipe,
                    then,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let r = if v.truthy() {
                        self.walk(then, &v)
                    } else {
                        self.walk(otherwise, dot)
                    };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::Range {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let mut p = pipe.clone();
                    let names = std::mem::take(&mut p.vars);
                    let v = self.pipeline(&p, dot)?;
                    let items: Vec<(Value, Value)> = match v {
                        Value::Map(m) => m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
                        Value::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Value::Int(i as i64), v))
                            .collect(),
                        Value::Int(n) => (0..n.max(0))
                            .map(|i| (Value::Int(i), Value::Int(i)))
                            .collect(),
                        Value::Nil => Vec::new(),
                        other => {
                            return Err(self.err(
                                pipe.line,
                                format!("range can't iterate over {}", other.print()),
                            ))
                        }
                    };
                    if items.is_empty() {
                        self.walk(otherwise, dot)?;
                    }
                    for (k, item) in items {
                        let inner = self.vars.len();
                        match names.as_slice() {
                            [] => {}
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [kn, vn, ..] => {
                                self.vars.push((kn.clone(), k));
                                self.vars.push((vn.clone(), item.clone()));
                            }
                        }
                        self.walk(body, &item)?;
                        self.vars.truncate(inner);
                    }
                    self.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }

    pub(super) fn lookup_var(&self, name: &str, line: usize) -> Result<Value, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err(line, format!("undefined variable: ${name}")))
    }

    pub(super) fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut prev: Option<Value> = None;
        for c in &p.cmds {
            prev = Some(self.command(c, dot, prev, p.line)?);
        }
        let v = prev.unwrap_or(Value::Nil);
        if !p.vars.is_empty() {
            if p.declare {
                self.vars.push((p.vars[0].clone(), v.clone()));
            } else if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| *n == p.vars[0]) {
                slot.1 = v.clone();
            }
        }
        Ok(v)
    }

    pub(super) fn field(
        &self,
        mut v: Value,
        fields: &[String],
        line: usize,
    ) -> Result<Value, TemplateError> {
        for f in fields {
            v = match v {
                Value::Map(m) => match m.get(f) {
                    Some(v) => v.clone(),
                    // Alertmanager's KV methods, where no key shadows them.
                    None if f == "Names" => {
                        Value::List(m.keys().cloned().map(Value::Str).collect())
                    }
                    None if f == "Values" => Value::List(m.into_values().collect()),
                    None if f == "SortedPairs" => Value::List(
                        m.into_iter()
                            .map(|(k, v)| {
                                Value::Map(BTreeMap::from([
                                    ("Name".to_string(), Value::Str(k)),
                                    ("Value".to_string(), v),
                                ]))
                            })
                            .collect(),
                    ),
                    // missingkey=zero: a missing label is "".
                    None => Value::Str(String::new()),
                },
                // Alertmanager's Alerts.Firing and Alerts.Resolved.
                Value::List(l) if f == "Firing" || f == "Resolved" => {
                    let want = f.to_lowercase();
                    Value::List(
                        l.into_iter()
                            .filter(|a| {
                                matches!(a, Value::Map(m) if m.get("Status") == Some(&Value::Str(want.clone())))
                            })
                            .collect(),
                    )
                }
                Value::Sample { labels, value } => match f.as_str() {
                    "Labels" => Value::Map(
                        labels
                            .into_iter()
                            .map(|(k, v)| (k, Value::Str(v)))
                            .collect(),
                    ),
                    "Value" => Value::Float(value),
                    _ => {
                        return Err(self.err(
                            line,
                            format!("can't evaluate field {f} in type *template.sample"),
                        ))
                    }
                },
                Value::Nil => return Err(self.err(line, format!("nil pointer evaluating {f}"))),
                other => {
                    return Err(self.err(
                        line,
                        format!("can't evaluate field {f} in type {}", other.type_name()),
                    ))
                }
            };
        }
        Ok(v)
    }

    pub(super) fn arg(
        &mut self,
        a: &Arg,
        dot: &Value,
        line: usize,
    ) -> Result<Value, TemplateError> {
        match a {
            Arg::Dot(f) => self.field(dot.clone(), f, line),
            Arg::Var(v, f) => {
                let base = self.lookup_var(v, line)?;
                self.field(base, f, line)
            }
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Func(name) => self.call(name, Vec::new(), line),
            Arg::Sub(p, f) => {
                let v = self.pipeline(p, dot)?;
                self.field(v, f, line)
            }
        }
    }

    pub(super) fn command(
        &mut self,
        c: &Command,
        dot: &Value,
        prev: Option<Value>,
        line: usize,
    ) -> Result<Value, TemplateError> {
        match &c.args[0] {
            Arg::Func(name) => {
                // `and`/`or` short-circuit.
                let mut args = Vec::new();
                if name == "and" || name == "or" {
                    let mut last = Value::Nil;
                    let total = c.args.len() - 1 + usize::from(prev.is_some());
                    if total == 0 {
                        return Err(self.err(
                            line,
                            format!("wrong number of args for {name}: want at least 1 got 0"),
                        ));
                    }
                    for a in &c.args[1..] {
                        last = self.arg(a, dot, line)?;
                        if (name == "and") != last.truthy() {
                            return Ok(last);
                        }
                    }
                    if let Some(p) = prev {
                        last = p;
                    }
                    return Ok(last);
                }
                for a in &c.args[1..] {
                    args.push(self.arg(a, dot, line)?);
                }
                if let Some(p) = prev {
                    args.push(p);
                }
                self.call(name, args, line)
            }
            first => {
                if c.args.len() > 1 || prev.is_some() {
                    return Err(self.err(line, "can't give argument to non-function"));
                }
                self.arg(first, dot, line)
            }
        }
    }

    pub(super) fn call(
        &mut self,
        name: &str,
        args: Vec<Value>,
        line: usize,
    ) -> Result<Value, TemplateError> {
        let e = |m: String| self.err(line, format!("error calling {name}: {m}"));
        let want = |n: usize| -> Result<(), TemplateError> {
            if args.len() != n {
                Err(self.err(
                    line,
                    format!(
                        "wrong number of args for {name}: want {n} got {}",
                        args.len()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let float0 = |args: &[Value]| {
            args[0]
                .to_float()
                .map_err(|m| self.err(line, format!("error calling {name}: {m}")))
        };
        let str_arg = |v: &Value| -> String {
            match v {
                Value::Str(s) => s.clone(),
                other => other.print(),
            }
        };
        Ok(match name {
            "not" => {
                want(1)?;
                Value::Bool(!args[0].truthy())
            }
            "len" => {
                want(1)?;
                Value::Int(match &args[0] {
                    Value::Str(s) => s.len(),
                    Value::Map(m) => m.len(),
                    Value::List(l) => l.len(),
                    other => return Err(e(format!("len of type {}", other.type_name()))),
                } as i64)
            }
            "index" => {
                if args.is_empty() {
                    return Err(e("index of untyped nil".into()));
                }
                let mut v = args[0].clone();
                for k in &args[1..] {
                    v = match (v, k) {
                        (Value::Map(m), k) => m
                            .get(&str_arg(k))
                            .cloned()
                            .unwrap_or(Value::Str(String::new())),
                        (Value::List(l), Value::Int(i)) => l
                            .get(*i as usize)
                            .cloned()
                            .ok_or_else(|| e(format!("index out of range: {i}")))?,
                        (other, _) => {
                            return Err(e(format!(
                                "can't index item of type {}",
                                other.type_name()
                            )))
                        }
                    };
                }
                v
            }
            "print" => Value::Str(go_sprint(&args)),
            "println" => Value::Str(format!(
                "{}\n",
                args.iter().map(Value::print).collect::<Vec<_>>().join(" ")
            )),
            "printf" => {
                if args.is_empty() {
                    return Err(self.err(
                        line,
                        "wrong number of args for printf: want at least 1 got 0",
                    ));
                }
                Value::Str(sprintf(&str_arg(&args[0]), &args[1..]))
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                if args.len() < 2 {
                    return Err(e("missing argument for comparison".into()));
                }
                if name == "eq" {
                    let mut any = false;
                    for b in &args[1..] {
                        if compare(&args[0], b).map_err(e)? == Some(std::cmp::Ordering::Equal) {
                            any = true;
                        }
                    }
                    return Ok(Value::Bool(any));
                }
                want(2)?;
                let ord = compare(&args[0], &args[1]).map_err(e)?;
                use std::cmp::Ordering::*;
                Value::Bool(match (name, ord) {
                    (_, None) => name == "ne",
                    ("ne", Some(o)) => o != Equal,
                    ("lt", Some(o)) => o == Less,
                    ("le", Some(o)) => o != Greater,
                    ("gt", Some(o)) => o == Greater,
                    ("ge", Some(o)) => o != Less,
                    _ => false,
                })
            }
            "html" => Value::Str(html_escape(&go_sprint(&args))),
            // Prometheus returns html/template.HTML, which text/template prints
            // as is; in an HTML email body it is the way to skip escaping.
            "safeHtml" => Value::Str(go_sprint(&args)),
            "join" => {
                want(2)?;
                let items: Vec<String> = match &args[1] {
                    Value::List(l) => l.iter().map(str_arg).collect(),
                    Value::Map(m) => m.values().map(str_arg).collect(),
                    other => {
                        return Err(self.err(
                            line,
                            format!("error calling join: cannot join a {}", other.type_name()),
                        ))
                    }
                };
                Value::Str(items.join(&str_arg(&args[0])))
            }
            "trimSpace" => {
                want(1)?;
                Value::Str(str_arg(&args[0]).trim().to_string())
            }
            "stringSlice" => Value::List(args.iter().map(|a| Value::Str(str_arg(a))).collect()),
            "js" => Value::Str(
                go_sprint(&args)
                    .replace('\\', "\\\\")
                    .replace('\'', "\\'")
                    .replace('"', "\\\""),
            ),
            "urlquery" => Value::Str(
                url::form_urlencoded::byte_serialize(go_sprint(&args).as_bytes()).collect(),
            ),
            "humanize" => {
                want(1)?;
                Value::Str(humanize(float0(&args)?))
            }
            "humanize1024" => {
                want(1)?;
                Value::Str(humanize1024(float0(&args)?))
            }
            "humanizeDuration" => {
                want(1)?;
                Value::Str(humanize_duration(float0(&args)?))
            }
            "humanizePercentage" => {
                want(1)?;
                Value::Str(format!(
                    "{}%",
                    gofmt::format_g(float0(&args)? * 100.0, Some(4), false)
                ))
            }
            "humanizeTimestamp" => {
                want(1)?;
                Value::Str(humanize_timestamp(float0(&args)?))
            }
            "toTime" => {
                want(1)?;
                Value::Str(humanize_timestamp(float0(&args)?))
            }
            "toDuration" => {
                want(1)?;
                let s = float0(&args)?;
                Value::Str(crate::config::duration::format_duration(
                    std::time::Duration::from_secs_f64(s.max(0.0)),
                ))
            }
            "parseDuration" => {
                want(1)?;
                let d = crate::config::duration::parse_duration(&str_arg(&args[0])).map_err(e)?;
                Value::Float(d.as_secs_f64())
            }
            "title" => {
                want(1)?;
                Value::Str(title(&str_arg(&args[0])))
            }
            "toUpper" => {
                want(1)?;
                Value::Str(str_arg(&args[0]).to_uppercase())
            }
            "toLower" => {
                want(1)?;
                Value::Str(str_arg(&args[0]).to_lowercase())
            }
            "stripPort" => {
                want(1)?;
                let s = str_arg(&args[0]);
                Value::Str(strip_port(&s))
            }
            "stripDomain" => {
                want(1)?;
                let s = str_arg(&args[0]);
                let (host, port) = match s.rsplit_once(':') {
                    Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => {
                        (h.to_string(), format!(":{p}"))
                    }
                    _ => (s.clone(), String::new()),
                };
                if host.parse::<std::net::IpAddr>().is_ok() {
                    Value::Str(s)
                } else {
                    Value::Str(format!("{}{port}", host.split('.').next().unwrap_or("")))
                }
            }
            "match" => {
                want(2)?;
                let re = regex::Regex::new(&str_arg(&args[0])).map_err(|x| e(x.to_string()))?;
                Value::Bool(re.is_match(&str_arg(&args[1])))
            }
            "reReplaceAll" => {
                want(3)?;
                let re = regex::Regex::new(&str_arg(&args[0])).map_err(|x| e(x.to_string()))?;
                Value::Str(
                    re.replace_all(&str_arg(&args[2]), str_arg(&args[1]).as_str())
                        .into_owned(),
                )
            }
            "args" => Value::Map(
                args.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("arg{i}"), v.clone()))
                    .collect(),
            ),
            "pathPrefix" | "externalURL" => {
                let u = self.funcs.external_url.clone();
                if name == "pathPrefix" {
                    Value::Str(
                        url::Url::parse(&u)
                            .map(|u| u.path().trim_end_matches('/').to_string())
                            .unwrap_or_default(),
                    )
                } else {
                    Value::Str(u)
                }
            }
            "query" => {
                want(1)?;
                let Some(q) = self.funcs.query else {
                    return Err(e("queries are not available here".into()));
                };
                let rows = q(&str_arg(&args[0])).map_err(e)?;
                Value::List(
                    rows.into_iter()
                        .map(|(labels, value)| Value::Sample { labels, value })
                        .collect(),
                )
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Value::List(l) => l
                        .first()
                        .cloned()
                        .ok_or_else(|| e("first() called on vector with no elements".into()))?,
                    other => return Err(e(format!("first of type {}", other.type_name()))),
                }
            }
            "label" => {
                want(2)?;
                match &args[1] {
                    Value::Sample { labels, .. } => {
                        Value::Str(labels.get(&str_arg(&args[0])).cloned().unwrap_or_default())
                    }
                    other => return Err(e(format!("label of type {}", other.type_name()))),
                }
            }
            "value" => {
                want(1)?;
                match &args[0] {
                    Value::Sample { value, .. } => Value::Float(*value),
                    other => return Err(e(format!("value of type {}", other.type_name()))),
                }
            }
            "strvalue" => {
                want(1)?;
                match &args[0] {
                    Value::Sample { labels, .. } => {
                        Value::Str(labels.get("__value__").cloned().unwrap_or_default())
                    }
                    other => return Err(e(format!("strvalue of type {}", other.type_name()))),
                }
            }
            "sortByLabel" => {
                want(2)?;
                let key = str_arg(&args[0]);
                match &args[1] {
                    Value::List(l) => {
                        let mut l = l.clone();
                        l.sort_by_key(|v| match v {
                            Value::Sample { labels, .. } => {
                                labels.get(&key).cloned().unwrap_or_default()
                            }
                            _ => String::new(),
                        });
                        Value::List(l)
                    }
                    other => return Err(e(format!("sortByLabel of type {}", other.type_name()))),
                }
            }
            other => return Err(self.err(line, format!("function \"{other}\" not defined"))),
        })
    }
}

pub(super) fn compare(a: &Value, b: &Value) -> Result<Option<std::cmp::Ordering>, String> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(Some(x.cmp(y))),
        (Value::Bool(x), Value::Bool(y)) => Ok(Some(x.cmp(y))),
        (Value::Int(x), Value::Int(y)) => Ok(Some(x.cmp(y))),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            let x = a.to_float()?;
            let y = b.to_float()?;
            Ok(x.partial_cmp(&y))
        }
        (Value::Nil, Value::Nil) => Ok(Some(std::cmp::Ordering::Equal)),
        _ => Err("incompatible types for comparison".into()),
    }
}

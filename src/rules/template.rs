//! Go `text/template`, the subset Prometheus alert templates use, with
//! Prometheus's template functions and data (`$labels`, `$value`,
//! `$externalLabels`, `$externalURL`).
//!
//! Written here rather than taken from a crate so that numbers print exactly
//! as Go prints them (`{{ $value }}` of 1e6 is `1e+06`) and so that missing
//! label keys expand to "" (Prometheus runs templates with `missingkey=zero`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::gofmt::{self, Spec};
use crate::labels::Labels;

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

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Num(String),
    Ident(String),
    /// `$name` (`$` alone is the root).
    Var(String),
    /// `.name` after something, or `.Field` on dot.
    Field(String),
    Dot,
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// A piece of the template source: literal text, or the tokens of one `{{ }}` action.
#[derive(Debug)]
enum Piece {
    Text(String),
    Action { toks: Vec<Tok>, line: usize },
}

fn lex(name: &str, src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut line = 1usize;
    let err = |line: usize, message: String| TemplateError {
        name: name.to_string(),
        line,
        message,
    };
    loop {
        let Some(open) = rest.find("{{") else {
            if !rest.is_empty() {
                pieces.push(Piece::Text(rest.to_string()));
            }
            break;
        };
        let mut text = rest[..open].to_string();
        line += text.matches('\n').count();
        let mut inner = &rest[open + 2..];
        if let Some(stripped) = inner
            .strip_prefix("- ")
            .or_else(|| inner.strip_prefix("-\n"))
            .or_else(|| inner.strip_prefix("-\t"))
        {
            text = text.trim_end().to_string();
            inner = stripped;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        // Comments.
        let trimmed = inner.trim_start();
        if let Some(c) = trimmed.strip_prefix("/*") {
            let Some(end) = c.find("*/") else {
                return Err(err(line, "unclosed comment".into()));
            };
            let after = c[end + 2..].trim_start();
            let (after, trim) = if let Some(a) = after.strip_prefix("-}}") {
                (a, true)
            } else if let Some(a) = after.strip_prefix("}}") {
                (a, false)
            } else {
                return Err(err(line, "comment ends before closing delimiter".into()));
            };
            line += c[..end].matches('\n').count();
            rest = if trim { after.trim_start() } else { after };
            continue;
        }
        let (toks, consumed, trim_after) = lex_action(inner).map_err(|m| err(line, m))?;
        line += inner[..consumed].matches('\n').count();
        pieces.push(Piece::Action { toks, line });
        rest = &inner[consumed..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    Ok(pieces)
}

/// Lexes one action up to and including `}}`. Returns the tokens, the bytes
/// consumed and whether a ` -}}` trim marker ended it.
fn lex_action(s: &str) -> Result<(Vec<Tok>, usize, bool), String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut toks = Vec::new();
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    loop {
        if i >= b.len() {
            return Err("unclosed action".into());
        }
        let c = b[i];
        if c.is_ascii_whitespace() {
            // ` -}}` trim marker.
            let ws_start = i;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if s[i..].starts_with("-}}") {
                return Ok((toks, i + 3, true));
            }
            if i == ws_start {
                i += 1;
            }
            continue;
        }
        if s[i..].starts_with("}}") {
            return Ok((toks, i + 2, false));
        }
        match c {
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            b'=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            b'"' => {
                let mut out = String::new();
                i += 1;
                loop {
                    let Some(ch) = s[i..].chars().next() else {
                        return Err("unterminated quoted string".into());
                    };
                    i += ch.len_utf8();
                    match ch {
                        '"' => break,
                        '\n' => return Err("unterminated quoted string".into()),
                        '\\' => {
                            let Some(e) = s[i..].chars().next() else {
                                return Err("unterminated quoted string".into());
                            };
                            i += e.len_utf8();
                            out.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                '0' => '\0',
                                other => return Err(format!("unknown escape sequence: \\{other}")),
                            });
                        }
                        other => out.push(other),
                    }
                }
                toks.push(Tok::Str(out));
            }
            b'`' => {
                let Some(end) = s[i + 1..].find('`') else {
                    return Err("unterminated raw quoted string".into());
                };
                toks.push(Tok::Str(s[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            b'$' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                toks.push(Tok::Var(s[start..i].to_string()));
            }
            b'.' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let start = i + 1;
                i += 1;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                toks.push(Tok::Field(s[start..i].to_string()));
            }
            b'.' if !b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) => {
                toks.push(Tok::Dot);
                i += 1;
            }
            c if c.is_ascii_digit() || c == b'-' || c == b'+' || c == b'.' => {
                let start = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || b[i] == b'_'
                        || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                toks.push(Tok::Num(s[start..i].to_string()));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(s[start..i].to_string()));
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(format!("unexpected {ch:?} in command"));
            }
        }
    }
}

// ---------------------------------------------------------------- parsing

#[derive(Debug, Clone)]
enum Arg {
    /// `.` followed by fields (`.Labels.job`).
    Dot(Vec<String>),
    /// `$x.a.b`
    Var(String, Vec<String>),
    Lit(Value),
    Func(String),
    /// `( pipeline )` followed by fields.
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone)]
struct Command {
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`).
    vars: Vec<String>,
    declare: bool,
    cmds: Vec<Command>,
    line: usize,
}

impl Pipeline {
    fn ends_in_safe_html(&self) -> bool {
        matches!(
            self.cmds.last().and_then(|c| c.args.first()),
            Some(Arg::Func(f)) if f == "safeHtml"
        )
    }
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        pipe: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    nodes: Vec<Node>,
}

const FUNCS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "title",
    "toUpper",
    "toLower",
    "match",
    "reReplaceAll",
    "first",
    "label",
    "value",
    "strvalue",
    "sortByLabel",
    "query",
    "args",
    "safeHtml",
    "stripPort",
    "stripDomain",
    "toTime",
    "toDuration",
    "parseDuration",
    "pathPrefix",
    "externalURL",
    "now",
    // Alertmanager's, for notification templates.
    "join",
    "trimSpace",
    "stringSlice",
];

/// The deepest nesting of `{{if}}`/`{{range}}`/`{{with}}` blocks and
/// parenthesized pipelines a template may have. Parsing and execution recurse
/// once per level on a fixed-size stack (Go's grow), and 50,000 levels in an
/// annotation aborted the daemon; no real template nests more than a few.
pub const MAX_TEMPLATE_DEPTH: usize = 100;

struct Parser<'a> {
    name: &'a str,
    pieces: Vec<Piece>,
    pos: usize,
    /// Variables in scope, for "undefined variable" errors like Go's parser.
    scopes: Vec<Vec<String>>,
    /// Blocks and parentheses open at this point (see [`MAX_TEMPLATE_DEPTH`]).
    depth: usize,
}

/// How a list of nodes ended.
enum ListEnd {
    End,
    Else(Vec<Tok>, usize),
    Eof,
}

impl<'a> Parser<'a> {
    fn err(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line,
            message: message.into(),
        }
    }

    /// Runs `parse` one level deeper, refusing past [`MAX_TEMPLATE_DEPTH`].
    fn nested<T>(
        &mut self,
        line: usize,
        parse: impl FnOnce(&mut Self) -> Result<T, TemplateError>,
    ) -> Result<T, TemplateError> {
        if self.depth >= MAX_TEMPLATE_DEPTH {
            return Err(self.err(
                line,
                format!("template nests deeper than {MAX_TEMPLATE_DEPTH} blocks and parentheses"),
            ));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn var_defined(&self, v: &str) -> bool {
        v.is_empty() || self.scopes.iter().any(|s| s.iter().any(|x| x == v))
    }

    fn parse_list(&mut self) -> Result<(Vec<Node>, ListEnd), TemplateError> {
        let mut nodes = Vec::new();
        while self.pos < self.pieces.len() {
            let idx = self.pos;
            self.pos += 1;
            let (toks, line) = match &self.pieces[idx] {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t.clone()));
                    continue;
                }
                Piece::Action { toks, line } => (toks.clone(), *line),
            };
            match toks.first() {
                None => return Err(self.err(line, "missing value for command")),
                Some(Tok::Ident(k)) if k == "end" => {
                    if toks.len() > 1 {
                        return Err(self.err(line, "unexpected token in end"));
                    }
                    return Ok((nodes, ListEnd::End));
                }
                Some(Tok::Ident(k)) if k == "else" => {
                    return Ok((nodes, ListEnd::Else(toks[1..].to_vec(), line)))
                }
                Some(Tok::Ident(k)) if k == "if" || k == "with" || k == "range" => {
                    let kind = k.clone();
                    nodes.push(self.nested(line, |p| p.parse_control(&kind, &toks[1..], line))?);
                }
                Some(Tok::Ident(k))
                    if matches!(
                        k.as_str(),
                        "define" | "template" | "block" | "break" | "continue"
                    ) =>
                {
                    return Err(
                        self.err(line, format!("{k} is not supported in rearguard templates"))
                    );
                }
                _ => {
                    let pipe = self.parse_pipeline(&toks, line, true)?;
                    nodes.push(Node::Action(pipe));
                }
            }
        }
        Ok((nodes, ListEnd::Eof))
    }

    fn parse_control(
        &mut self,
        kind: &str,
        toks: &[Tok],
        line: usize,
    ) -> Result<Node, TemplateError> {
        self.scopes.push(Vec::new());
        let pipe = self.parse_pipeline(
            toks,
            line,
            kind == "range" || kind == "if" || kind == "with",
        )?;
        if pipe.cmds.is_empty() {
            return Err(self.err(line, format!("missing value for {kind}")));
        }
        let (then, end) = self.parse_list()?;
        let otherwise = match end {
            ListEnd::End => Vec::new(),
            ListEnd::Eof => {
                return Err(self.err(line, format!("unexpected EOF: {kind} has no end")))
            }
            ListEnd::Else(rest, eline) => {
                if rest.is_empty() {
                    let (other, end) = self.parse_list()?;
                    match end {
                        ListEnd::End => other,
                        _ => return Err(self.err(eline, "expected end; found else or EOF")),
                    }
                } else if matches!(rest.first(), Some(Tok::Ident(k)) if (k == "if" && kind == "if") || (k == "with" && kind == "with"))
                {
                    // `else if` / `else with`: a nested control that consumes our `end`.
                    vec![self.nested(eline, |p| p.parse_control(kind, &rest[1..], eline))?]
                } else {
                    return Err(self.err(eline, "unexpected tokens after else"));
                }
            }
        };
        self.scopes.pop();
        Ok(match kind {
            "if" => Node::If {
                pipe,
                then,
                otherwise,
            },
            "with" => Node::With {
                pipe,
                then,
                otherwise,
            },
            _ => Node::Range {
                pipe,
                body: then,
                otherwise,
            },
        })
    }

    fn parse_pipeline(
        &mut self,
        toks: &[Tok],
        line: usize,
        allow_decl: bool,
    ) -> Result<Pipeline, TemplateError> {
        let mut i = 0;
        let mut vars = Vec::new();
        let mut declare = false;
        // `$x :=` / `$x, $y :=` / `$x =`
        {
            let mut j = 0;
            let mut names = Vec::new();
            while let Some(Tok::Var(v)) = toks.get(j) {
                names.push(v.clone());
                j += 1;
                if toks.get(j) == Some(&Tok::Comma) {
                    j += 1;
                    continue;
                }
                break;
            }
            if !names.is_empty() && matches!(toks.get(j), Some(Tok::Declare) | Some(Tok::Assign)) {
                if !allow_decl && names.len() > 1 {
                    return Err(self.err(line, "too many declarations"));
                }
                declare = toks.get(j) == Some(&Tok::Declare);
                if !declare {
                    for n in &names {
                        if !self.var_defined(n) {
                            return Err(self.err(line, format!("undefined variable \"${n}\"")));
                        }
                    }
                }
                vars = names;
                i = j + 1;
            }
        }
        let mut cmds = Vec::new();
        let mut cur = Vec::new();
        while i < toks.len() {
            match &toks[i] {
                Tok::Pipe => {
                    if cur.is_empty() {
                        return Err(self.err(line, "missing command"));
                    }
                    cmds.push(Command {
                        args: std::mem::take(&mut cur),
                    });
                    i += 1;
                }
                _ => {
                    let (arg, next) = self.parse_operand(toks, i, line)?;
                    cur.push(arg);
                    i = next;
                }
            }
        }
        if !cur.is_empty() {
            cmds.push(Command { args: cur });
        } else if !cmds.is_empty() {
            return Err(self.err(line, "missing command"));
        }
        if cmds.is_empty() && !vars.is_empty() {
            return Err(self.err(line, "missing value for command"));
        }
        for c in &cmds[1.min(cmds.len())..] {
            if let Some(Arg::Lit(_)) = c.args.first() {
                return Err(self.err(line, "non executable command in pipeline stage 2"));
            }
        }
        if declare {
            if let Some(scope) = self.scopes.last_mut() {
                scope.extend(vars.iter().cloned());
            }
        }
        Ok(Pipeline {
            vars,
            declare,
            cmds,
            line,
        })
    }

    fn fields(toks: &[Tok], mut i: usize) -> (Vec<String>, usize) {
        let mut f = Vec::new();
        while let Some(Tok::Field(name)) = toks.get(i) {
            f.push(name.clone());
            i += 1;
        }
        (f, i)
    }

    fn parse_operand(
        &mut self,
        toks: &[Tok],
        i: usize,
        line: usize,
    ) -> Result<(Arg, usize), TemplateError> {
        match &toks[i] {
            Tok::Dot => {
                let (f, n) = Self::fields(toks, i + 1);
                Ok((Arg::Dot(f), n))
            }
            Tok::Field(_) => {
                let (f, n) = Self::fields(toks, i);
                Ok((Arg::Dot(f), n))
            }
            Tok::Var(v) => {
                if !self.var_defined(v) {
                    return Err(self.err(line, format!("undefined variable \"${v}\"")));
                }
                let (f, n) = Self::fields(toks, i + 1);
                Ok((Arg::Var(v.clone(), f), n))
            }
            Tok::Str(s) => Ok((Arg::Lit(Value::Str(s.clone())), i + 1)),
            Tok::Num(n) => {
                let v = if let Ok(i) = n.parse::<i64>() {
                    Value::Int(i)
                } else if let Some(h) = n.strip_prefix("0x") {
                    i64::from_str_radix(h, 16)
                        .map(Value::Int)
                        .map_err(|_| self.err(line, format!("bad number syntax: {n:?}")))?
                } else {
                    n.parse::<f64>()
                        .map(Value::Float)
                        .map_err(|_| self.err(line, format!("bad number syntax: {n:?}")))?
                };
                Ok((Arg::Lit(v), i + 1))
            }
            Tok::Ident(k) => match k.as_str() {
                "true" => Ok((Arg::Lit(Value::Bool(true)), i + 1)),
                "false" => Ok((Arg::Lit(Value::Bool(false)), i + 1)),
                "nil" => Ok((Arg::Lit(Value::Nil), i + 1)),
                name if FUNCS.contains(&name) => Ok((Arg::Func(name.to_string()), i + 1)),
                name => Err(self.err(line, format!("function \"{name}\" not defined"))),
            },
            Tok::LParen => {
                // Find the matching parenthesis.
                let mut depth = 0;
                let mut j = i;
                while j < toks.len() {
                    match toks[j] {
                        Tok::LParen => depth += 1,
                        Tok::RParen => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= toks.len() {
                    return Err(self.err(line, "unclosed left paren"));
                }
                let inner =
                    self.nested(line, |p| p.parse_pipeline(&toks[i + 1..j], line, false))?;
                if inner.cmds.is_empty() {
                    return Err(self.err(line, "missing value for parenthesized pipeline"));
                }
                let (f, n) = Self::fields(toks, j + 1);
                Ok((Arg::Sub(Box::new(inner), f), n))
            }
            Tok::RParen => Err(self.err(line, "unexpected right paren")),
            other => Err(self.err(line, format!("unexpected {other:?} in operand"))),
        }
    }
}

impl Template {
    /// Parses `text`. `preset` names the variables the caller will define
    /// (Prometheus: labels, value, externalLabels, externalURL).
    pub fn parse(name: &str, text: &str, preset: &[&str]) -> Result<Template, TemplateError> {
        let pieces = lex(name, text)?;
        let mut p = Parser {
            name,
            pieces,
            pos: 0,
            scopes: vec![preset.iter().map(|s| s.to_string()).collect()],
            depth: 0,
        };
        let (nodes, end) = p.parse_list()?;
        match end {
            ListEnd::Eof => Ok(Template {
                name: name.to_string(),
                nodes,
            }),
            ListEnd::End => Err(p.err(0, "unexpected {{end}}")),
            ListEnd::Else(_, line) => Err(p.err(line, "unexpected {{else}}")),
        }
    }

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

struct Exec<'a> {
    name: &'a str,
    escape_html: bool,
    vars: Vec<(String, Value)>,
    funcs: &'a Funcs<'a>,
    out: String,
    steps: usize,
}

const MAX_STEPS: usize = 100_000;

impl<'a> Exec<'a> {
    fn err(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line,
            message: message.into(),
        }
    }

    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
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

    fn lookup_var(&self, name: &str, line: usize) -> Result<Value, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err(line, format!("undefined variable: ${name}")))
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
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

    fn field(&self, mut v: Value, fields: &[String], line: usize) -> Result<Value, TemplateError> {
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

    fn arg(&mut self, a: &Arg, dot: &Value, line: usize) -> Result<Value, TemplateError> {
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

    fn command(
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

    fn call(&mut self, name: &str, args: Vec<Value>, line: usize) -> Result<Value, TemplateError> {
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

fn compare(a: &Value, b: &Value) -> Result<Option<std::cmp::Ordering>, String> {
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

/// Escapes text for HTML element content and quoted attributes (Go's `html`).
pub fn html_escape(s: &str) -> String {
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

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return rest[..end].to_string();
        }
    }
    match s.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h.to_string(),
        _ => s.to_string(),
    }
}

/// `fmt.Sprint`: spaces between operands when neither is a string.
fn go_sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&a.print());
    }
    out
}

/// `strings.Title`: upper-cases the first letter of each word.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphanumeric() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

pub fn humanize(mut v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4), false);
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", gofmt::format_g(v, Some(4), false))
}

pub fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4), false);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", gofmt::format_g(v, Some(4), false))
}

pub fn humanize_duration(mut v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4), false);
    }
    if v == 0.0 {
        return format!("{}s", gofmt::format_g(v, Some(4), false));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (seconds, minutes, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", gofmt::format_g(v, Some(4), false));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", gofmt::format_g(v, Some(4), false))
}

/// Go's `time.Time.String()` in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
pub fn humanize_timestamp(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4), false);
    }
    // Prometheus goes through model.Time: millisecond precision, truncated.
    let ns = v * 1e9;
    if ns > i64::MAX as f64 || ns < i64::MIN as f64 {
        return format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            gofmt::format_v(v)
        );
    }
    let ms = (ns as i64) / 1_000_000;
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return gofmt::format_g(v, Some(4), false);
    };
    let mut frac = String::new();
    let sub = ms.rem_euclid(1000);
    if sub > 0 {
        frac = format!(".{sub:03}");
        while frac.ends_with('0') {
            frac.pop();
        }
    }
    format!("{}{frac} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S"))
}

/// Go's `fmt.Sprintf` for the verbs templates use.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = format.chars().peekable();
    let mut argi = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = it.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            it.next();
        }
        let num = |it: &mut std::iter::Peekable<std::str::Chars>| -> Option<usize> {
            let mut s = String::new();
            while let Some(&d) = it.peek() {
                if d.is_ascii_digit() {
                    s.push(d);
                    it.next();
                } else {
                    break;
                }
            }
            s.parse().ok()
        };
        spec.width = num(&mut it);
        if it.peek() == Some(&'.') {
            it.next();
            spec.prec = Some(num(&mut it).unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        out.push_str(&format_verb(verb, &spec, arg));
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[argi..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.print()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

fn format_verb(verb: char, spec: &Spec, arg: &Value) -> String {
    let bad = || format!("%!{verb}({}={})", arg.type_name(), arg.print());
    match (verb, arg) {
        ('v', Value::Float(f)) => gofmt::pad(gofmt::signed(gofmt::format_v(*f), spec), spec, true),
        ('v', other)
        | (
            's',
            other @ (Value::Str(_)
            | Value::Map(_)
            | Value::List(_)
            | Value::Bool(_)
            | Value::Nil
            | Value::Sample { .. }),
        ) => {
            let mut s = other.print();
            if let (Some(p), Value::Str(_)) = (spec.prec, other) {
                s = s.chars().take(p).collect();
            }
            gofmt::pad(s, spec, false)
        }
        ('s', Value::Float(f)) => format!("%!s(float64={})", gofmt::format_v(*f)),
        ('s', Value::Int(i)) => format!("%!s(int={i})"),
        ('q', Value::Str(s)) => gofmt::pad(format!("{s:?}"), spec, false),
        ('t', Value::Bool(b)) => gofmt::pad(b.to_string(), spec, false),
        ('d', Value::Int(i)) => gofmt::pad(gofmt::signed(i.to_string(), spec), spec, true),
        ('x' | 'X', Value::Int(i)) => {
            let s = if verb == 'x' {
                format!("{i:x}")
            } else {
                format!("{i:X}")
            };
            gofmt::pad(s, spec, true)
        }
        ('x' | 'X', Value::Str(s)) => {
            let h = hex::encode(s.as_bytes());
            gofmt::pad(if verb == 'X' { h.to_uppercase() } else { h }, spec, false)
        }
        ('f' | 'F' | 'e' | 'E' | 'g' | 'G', Value::Float(_) | Value::Int(_)) => {
            let f = match arg {
                Value::Float(f) => *f,
                Value::Int(_) => return bad(),
                _ => 0.0,
            };
            let s = match verb {
                'f' | 'F' => gofmt::format_f(f, spec.prec.unwrap_or(6)),
                'e' | 'E' => gofmt::format_e(f, spec.prec.unwrap_or(6), verb == 'E'),
                _ => gofmt::format_g(f, spec.prec, verb == 'G'),
            };
            gofmt::pad(gofmt::signed(s, spec), spec, true)
        }
        _ => bad(),
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

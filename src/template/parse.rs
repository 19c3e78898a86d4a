//! Parsing: tokens into the node tree of a [`Template`].

use super::*;

// ---------------------------------------------------------------- parsing

#[derive(Debug, Clone)]
pub(super) enum Arg {
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
pub(super) struct Command {
    pub(super) args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`).
    pub(super) vars: Vec<String>,
    pub(super) declare: bool,
    pub(super) cmds: Vec<Command>,
    pub(super) line: usize,
}

impl Pipeline {
    pub(super) fn ends_in_safe_html(&self) -> bool {
        matches!(
            self.cmds.last().and_then(|c| c.args.first()),
            Some(Arg::Func(f)) if f == "safeHtml"
        )
    }
}

#[derive(Debug, Clone)]
pub(super) enum Node {
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
    pub(super) name: String,
    pub(super) nodes: Vec<Node>,
}

pub(super) const FUNCS: &[&str] = &[
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

pub(super) struct Parser<'a> {
    name: &'a str,
    pieces: Vec<Piece>,
    pos: usize,
    /// Variables in scope, for "undefined variable" errors like Go's parser.
    scopes: Vec<Vec<String>>,
    /// Blocks and parentheses open at this point (see [`MAX_TEMPLATE_DEPTH`]).
    depth: usize,
}

/// How a list of nodes ended.
pub(super) enum ListEnd {
    End,
    Else(Vec<Tok>, usize),
    Eof,
}

impl<'a> Parser<'a> {
    pub(super) fn err(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line,
            message: message.into(),
        }
    }

    /// Runs `parse` one level deeper, refusing past [`MAX_TEMPLATE_DEPTH`].
    pub(super) fn nested<T>(
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

    pub(super) fn var_defined(&self, v: &str) -> bool {
        v.is_empty() || self.scopes.iter().any(|s| s.iter().any(|x| x == v))
    }

    pub(super) fn parse_list(&mut self) -> Result<(Vec<Node>, ListEnd), TemplateError> {
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

    pub(super) fn parse_control(
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

    pub(super) fn parse_pipeline(
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

    pub(super) fn fields(toks: &[Tok], mut i: usize) -> (Vec<String>, usize) {
        let mut f = Vec::new();
        while let Some(Tok::Field(name)) = toks.get(i) {
            f.push(name.clone());
            i += 1;
        }
        (f, i)
    }

    pub(super) fn parse_operand(
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
}

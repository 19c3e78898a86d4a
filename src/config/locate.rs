//! Where in a YAML file a value sits, so that errors found after parsing
//! (a duplicate name, a missing secret file) still point at file:line:col.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser};

/// One step of a path into a YAML document: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A path such as `probes[2].expect.status`, built with [`YamlPath::key`] and [`YamlPath::index`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(pub Vec<Step>);

impl YamlPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Step::Key(k.to_string()));
        Self(v)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Step::Index(i));
        Self(v)
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Step::Key(k) if i == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A position: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Positions of every node of a YAML document, by path. Keys map to the
/// position of their value; the key's own position is kept under `key_positions`.
#[derive(Debug, Default)]
pub struct Locator {
    values: HashMap<YamlPath, Pos>,
    keys: HashMap<YamlPath, Pos>,
}

enum Frame {
    Map {
        path: YamlPath,
        pending_key: Option<(String, Pos)>,
    },
    Seq {
        path: YamlPath,
        next: usize,
    },
}

impl Locator {
    /// Indexes `text`. A document that does not parse gives an empty locator
    /// (the YAML parser's own error is reported instead).
    pub fn new(text: &str) -> Self {
        let mut loc = Locator::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        let mut doc_seen = false;
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            match event {
                Event::DocumentStart(_) => {
                    if doc_seen {
                        break;
                    }
                    doc_seen = true;
                }
                Event::Scalar(value, ..) => {
                    // A scalar is either a mapping key or a value.
                    if let Some(Frame::Map { pending_key, path }) = stack.last_mut() {
                        if pending_key.is_none() {
                            loc.keys.insert(path.key(&value), pos);
                            *pending_key = Some((value.to_string(), pos));
                            continue;
                        }
                    }
                    let path = loc.value_path(&mut stack);
                    loc.values.insert(path, pos);
                }
                Event::Alias(_) => {
                    let path = loc.value_path(&mut stack);
                    loc.values.insert(path, pos);
                }
                Event::MappingStart(..) => {
                    let path = loc.value_path(&mut stack);
                    loc.values.insert(path.clone(), pos);
                    stack.push(Frame::Map {
                        path,
                        pending_key: None,
                    });
                }
                Event::SequenceStart(..) => {
                    let path = loc.value_path(&mut stack);
                    loc.values.insert(path.clone(), pos);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::StreamEnd => break,
                _ => {}
            }
        }
        loc
    }

    /// The path of the value about to be read, advancing the enclosing frame.
    fn value_path(&self, stack: &mut [Frame]) -> YamlPath {
        match stack.last_mut() {
            None => YamlPath::root(),
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some((k, _)) => path.key(&k),
                // A complex (non-scalar) key: not addressable, point at the map.
                None => path.clone(),
            },
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                p
            }
        }
    }

    /// The position of the value at `path`, or of its nearest ancestor that exists.
    pub fn value(&self, path: &YamlPath) -> Pos {
        let mut p = path.clone();
        loop {
            if let Some(pos) = self.values.get(&p) {
                return *pos;
            }
            if p.0.pop().is_none() {
                return Pos { line: 1, col: 1 };
            }
        }
    }

    /// The position of the key at `path` (falls back to the value's position).
    pub fn key(&self, path: &YamlPath) -> Pos {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

/// An error in an input file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedError {
    pub file: PathBuf,
    pub pos: Pos,
    pub message: String,
}

impl LocatedError {
    pub fn new(file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.pos.line,
            self.pos.col,
            self.message
        )
    }
}

/// Several located errors (what `rearguard check` prints, one per line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocatedErrors(pub Vec<LocatedError>);

impl fmt::Display for LocatedErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LocatedErrors {}

/// Turns a serde_yaml_ng error into a located error. Its message names the
/// path; its location is the line and column the parser stopped at.
pub fn from_yaml_error(file: &Path, err: &serde_yaml_ng::Error) -> LocatedError {
    let pos = err
        .location()
        .map(|l| Pos {
            line: l.line(),
            col: l.column(),
        })
        .unwrap_or(Pos { line: 1, col: 1 });
    let mut message = err.to_string();
    // serde_yaml_ng appends " at line L column C"; the prefix already says it.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    LocatedError::new(file, pos, message)
}

/// The deepest nesting of flow collections (`[…]`, `{…}`) a config or rule
/// file may have. serde_yaml_ng refuses past 128 levels, but the path of every
/// level is indexed first, which costs the square of the depth: 100,000 levels
/// took minutes. No real file nests more than a handful.
pub const MAX_YAML_FLOW_DEPTH: usize = 64;

/// The largest config or rule file read, in bytes.
pub const MAX_YAML_BYTES: usize = 16 * 1024 * 1024;

/// Refuses a YAML text too large or too deeply nested to parse safely, in one
/// pass without recursion. Brackets inside quoted scalars and comments do not
/// count; those in plain scalars (`rate(x[5m])`) do, and are balanced.
pub fn check_yaml_limits(file: &Path, text: &str) -> Result<(), LocatedError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(LocatedError::new(
            file,
            Pos { line: 1, col: 1 },
            format!(
                "file is {} bytes; the limit is {MAX_YAML_BYTES} bytes",
                text.len()
            ),
        ));
    }
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut in_comment = false;
    let mut prev = '\n';
    for c in text.chars() {
        col += 1;
        if c == '\n' {
            (line, col, in_comment) = (line + 1, 0, false);
            prev = c;
            continue;
        }
        if in_comment {
            continue;
        }
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' if !prev.is_alphanumeric() => quote = Some(c),
                '#' if prev.is_whitespace() => in_comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_YAML_FLOW_DEPTH {
                        return Err(LocatedError::new(
                            file,
                            Pos { line, col },
                            format!(
                                "YAML nests deeper than {MAX_YAML_FLOW_DEPTH} levels of [ ] and {{ }}"
                            ),
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_limits_allow_real_files_and_locate_deep_nesting() {
        let file = Path::new("r.yaml");
        let real = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(x[5m]) > 0 # [[[[\n    annotations: {summary: \"{{ $labels.job }} [\"}\n";
        assert!(check_yaml_limits(file, real).is_ok());
        let deep = format!("a: {}{}", "[".repeat(65), "]".repeat(65));
        let err = check_yaml_limits(file, &deep).unwrap_err();
        assert_eq!(err.pos, Pos { line: 1, col: 68 });
    }

    #[test]
    fn locates_nested_values() {
        let text = "listen: 1.2.3.4:5\nprobes:\n  - name: a\n    url: http://x\n  - name: b\n    url: bad\n";
        let loc = Locator::new(text);
        let p = YamlPath::root().key("probes").index(1).key("url");
        assert_eq!(loc.value(&p), Pos { line: 6, col: 10 });
        assert_eq!(loc.key(&p), Pos { line: 6, col: 5 });
        assert_eq!(
            loc.value(&YamlPath::root().key("listen")),
            Pos { line: 1, col: 9 }
        );
        // An absent path falls back to its nearest ancestor.
        let missing = YamlPath::root().key("probes").index(0).key("timeout");
        assert_eq!(loc.value(&missing), Pos { line: 3, col: 5 });
        assert_eq!(p.to_string(), "probes[1].url");
    }

    #[test]
    fn flow_style() {
        let loc = Locator::new("a: {b: [1, 2, {c: 3}]}\n");
        let p = YamlPath::root().key("a").key("b").index(2).key("c");
        assert_eq!(loc.value(&p), Pos { line: 1, col: 19 });
    }
}

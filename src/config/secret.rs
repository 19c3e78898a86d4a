//! Secrets: read from `*_file` keys or given through `${ENV}` expansion, never printed.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` print `<secret>`, so a secret that
/// ends up in a log line or an error by mistake still does not leak.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself: call only where it leaves the process (a header, a login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Reads a secret file (path relative to the config file's folder), trimming
/// one trailing newline. The error names the file and says what to do; it
/// never contains the content.
pub fn read_secret_file(base_dir: &Path, path: &Path) -> Result<Secret, String> {
    let full = resolve_path(base_dir, path);
    match std::fs::read_to_string(&full) {
        Ok(s) => Ok(Secret(
            s.strip_suffix('\n')
                .map(|s| s.strip_suffix('\r').unwrap_or(s))
                .unwrap_or(&s)
                .to_string(),
        )),
        Err(e) => Err(format!(
            "cannot read secret file {}: {e} (create it, or fix the path; relative paths are resolved from the config file's folder)",
            full.display()
        )),
    }
}

pub fn resolve_path(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// The result of `${VAR}` expansion: the new text and the values substituted,
/// which error messages must redact.
pub struct Expanded {
    pub text: String,
    pub substituted: Vec<String>,
    /// `(line, col, name)` for each `${VAR}` that is not set.
    pub missing: Vec<(usize, usize, String)>,
}

/// Expands `${VAR}` (and `${VAR:-default}`) in config text; `$$` stands for `$`.
/// Lines that are YAML comments are left alone.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Expanded {
    let mut out = String::with_capacity(text.len());
    let mut substituted = Vec::new();
    let mut missing = Vec::new();
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        let mut col = 1;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            col += rest[..i].chars().count();
            let after = &rest[i + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
                col += 2;
                continue;
            }
            if let Some(body) = after.strip_prefix('{') {
                if let Some(end) = body.find('}') {
                    let inner = &body[..end];
                    let (name, default) = match inner.split_once(":-") {
                        Some((n, d)) => (n, Some(d)),
                        None => (inner, None),
                    };
                    let valid = !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if valid {
                        match lookup(name).or_else(|| default.map(str::to_string)) {
                            Some(v) => {
                                if !v.is_empty() && default != Some(v.as_str()) {
                                    substituted.push(v.clone());
                                }
                                out.push_str(&v);
                            }
                            None => missing.push((lineno + 1, col, name.to_string())),
                        }
                        col += inner.chars().count() + 3;
                        rest = &body[end + 1..];
                        continue;
                    }
                }
            }
            out.push('$');
            col += 1;
            rest = after;
        }
        out.push_str(rest);
    }
    Expanded {
        text: out,
        substituted,
        missing,
    }
}

/// Replaces every substituted value in `message` with `<redacted>`.
pub fn redact(message: &str, substituted: &[String]) -> String {
    let mut m = message.to_string();
    for v in substituted {
        if v.len() >= 3 {
            m = m.replace(v.as_str(), "<redacted>");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_and_reports_missing() {
        let e = expand_env(
            "a: ${A}\n# ${IGNORED}\nb: ${NOPE}\nc: $$x ${D:-dflt}\n",
            |n| (n == "A").then(|| "hunter2".to_string()),
        );
        assert_eq!(e.text, "a: hunter2\n# ${IGNORED}\nb: \nc: $x dflt\n");
        assert_eq!(e.substituted, vec!["hunter2".to_string()]);
        assert_eq!(e.missing, vec![(3, 4, "NOPE".to_string())]);
        assert_eq!(
            redact("bad value hunter2", &e.substituted),
            "bad value <redacted>"
        );
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("pw");
        assert_eq!(format!("{s} {s:?}"), "<secret> <secret>");
    }
}

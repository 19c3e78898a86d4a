//! Quoting as Prometheus prints it, and the string literals whose escapes
//! decode to invalid UTF-8 (which Prometheus refuses).

use std::collections::HashSet;

use crate::labels::Labels;

/// The quoted string literals of `src` whose Go decoding (`\xHH` and octal
/// escapes are raw bytes) is not valid UTF-8, as promql-parser decodes them.
pub(crate) fn invalid_utf8_literals(src: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let q = b[i];
        if q != b'"' && q != b'\'' && q != b'`' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let mut bytes: Vec<u8> = Vec::new();
        while i < b.len() && b[i] != q {
            if b[i] == b'\\' && q != b'`' && i + 1 < b.len() {
                let c = b[i + 1];
                let hex = |s: &[u8]| {
                    std::str::from_utf8(s)
                        .ok()
                        .and_then(|s| u32::from_str_radix(s, 16).ok())
                };
                match c {
                    b'x' if i + 3 < b.len() => {
                        if let Some(v) = hex(&b[i + 2..i + 4]) {
                            bytes.push(v as u8);
                        }
                        i += 4;
                        continue;
                    }
                    b'0'..=b'7' if i + 3 < b.len() => {
                        let oct = std::str::from_utf8(&b[i + 1..i + 4])
                            .ok()
                            .and_then(|s| u32::from_str_radix(s, 8).ok());
                        if let Some(v) = oct {
                            bytes.push(v as u8);
                        }
                        i += 4;
                        continue;
                    }
                    _ => {
                        bytes.push(b[i]);
                        bytes.push(c);
                        i += 2;
                        continue;
                    }
                }
            }
            bytes.push(b[i]);
            i += 1;
        }
        let end = (i + 1).min(b.len());
        if std::str::from_utf8(&bytes).is_err() {
            if let Ok(decoded) = super::notation::unquote(&src[start..end]) {
                out.insert(decoded);
            }
        }
        i = end;
    }
    out
}

/// Formats labels the way Go's `labels.Labels.String()` does:
/// `{__name__="x", a="b"}`.
pub(crate) fn format_labels_braced(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&x.name);
        s.push('=');
        s.push_str(&go_quote(&x.value));
    }
    s.push('}');
    s
}

/// Go's `strconv.Quote` for the common cases.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

//! Lexing: template source into literal text and the tokens of each `{{ }}` action.

use super::*;

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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
pub(super) enum Piece {
    Text(String),
    Action { toks: Vec<Tok>, line: usize },
}

pub(super) fn lex(name: &str, src: &str) -> Result<Vec<Piece>, TemplateError> {
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
pub(super) fn lex_action(s: &str) -> Result<(Vec<Tok>, usize, bool), String> {
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

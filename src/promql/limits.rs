//! Limits an expression meets before it reaches the parser.
//!
//! promql-parser builds, and the evaluator walks, the syntax tree recursively,
//! and dropping a tree is recursive too. Go's growing stacks let Prometheus do
//! without limits; a Rust thread's stack is fixed (2 MiB for tokio's workers
//! and the blocking pool), and `1+1+…` of 5,000 terms overflowed it and
//! aborted the whole daemon. So the text is scanned first, in one pass with no
//! recursion, for an upper bound of the tree's depth: every binary operator
//! and every bracket can add at most one level. Real rules stay far below the
//! limits (the shipped rules reach a depth of 12).

/// The longest expression accepted, in bytes.
pub const MAX_EXPR_BYTES: usize = 128 * 1024;

/// The most levels of syntax tree an expression may need: binary operators
/// plus the deepest bracket nesting. Measured in a debug build (the largest
/// frames) on a 2 MiB stack: 128 nested function calls pass, 256 overflow;
/// release frames are several times smaller.
pub const MAX_EXPR_DEPTH: usize = 128;

/// Why an expression was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("expression is {len} bytes long; the limit is {MAX_EXPR_BYTES} bytes")]
    TooLong { len: usize },
    #[error(
        "{what} {number} is out of range: at most {MAX_DURATION_SECONDS:e} seconds (write a \
         duration such as 5m, 1h or 30d)"
    )]
    NumberOutOfRange { what: &'static str, number: String },
    #[error(
        "expression nests too deeply: {depth} levels of operators and brackets; the limit is \
         {MAX_EXPR_DEPTH} (split it into recording rules)"
    )]
    TooDeep { depth: usize },
}

/// Checks `expr` against [`MAX_EXPR_BYTES`] and [`MAX_EXPR_DEPTH`].
pub fn check(expr: &str) -> Result<(), LimitError> {
    if expr.len() > MAX_EXPR_BYTES {
        return Err(LimitError::TooLong { len: expr.len() });
    }
    out_of_range_durations(expr)?;
    let depth = depth_bound(expr);
    if depth > MAX_EXPR_DEPTH {
        return Err(LimitError::TooDeep { depth });
    }
    Ok(())
}

/// The largest number accepted as a range, offset or `@` time, in seconds
/// (about 31,700 years). promql-parser 0.11 turns such numbers into a
/// `Duration` with `from_secs_f64`, which panics on infinity and on anything
/// past `u64::MAX` seconds (found by `fuzz/`: `w[9e1012]`).
pub const MAX_DURATION_SECONDS: f64 = 1e12;

/// Refuses a plain number used as a duration or time (`[90]`, `[5m:1e3]`,
/// `offset -30`, `@ 1.7e9`) that is not finite or beyond
/// [`MAX_DURATION_SECONDS`]. Numbers elsewhere (`x > 1e400`) are left alone.
fn out_of_range_durations(expr: &str) -> Result<(), LimitError> {
    let bytes = expr.as_bytes();
    let mut in_brackets = 0usize;
    // Set right after `offset` or `@`: the next number is a duration or time.
    let mut after_keyword: Option<&'static str> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i = skip_string(bytes, i);
                after_keyword = None;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' => in_brackets += 1,
            b']' => in_brackets = in_brackets.saturating_sub(1),
            b'@' => after_keyword = Some("time"),
            b'+' | b'-' if after_keyword.is_some() => {}
            c if c.is_ascii_whitespace() => {}
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                after_keyword = expr[start..i]
                    .eq_ignore_ascii_case("offset")
                    .then_some("offset");
                continue;
            }
            c if c.is_ascii_digit() || c == b'.' => {
                let start = i;
                while i < bytes.len() {
                    let b = bytes[i];
                    let exponent_sign =
                        (b == b'+' || b == b'-') && matches!(bytes[i - 1], b'e' | b'E');
                    if !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || exponent_sign) {
                        break;
                    }
                    i += 1;
                }
                let what = after_keyword
                    .take()
                    .or((in_brackets > 0).then_some("range"));
                let number = &expr[start..i];
                if let (Some(what), Ok(seconds)) = (what, number.parse::<f64>()) {
                    if !seconds.is_finite() || seconds.abs() > MAX_DURATION_SECONDS {
                        let number = number.to_string();
                        return Err(LimitError::NumberOutOfRange { what, number });
                    }
                }
                continue;
            }
            _ => after_keyword = None,
        }
        i += 1;
    }
    Ok(())
}

/// An upper bound of the syntax tree's depth: the number of operator tokens
/// outside label matchers plus the deepest nesting of brackets. It counts a
/// `-` in `1e-3` or in a duration too; overcounting only makes the bound looser.
fn depth_bound(expr: &str) -> usize {
    let bytes = expr.as_bytes();
    let mut operators = 0usize;
    let (mut nesting, mut deepest) = (0usize, 0usize);
    // Inside `{…}` words and `=`/`!~` are label matchers, not operators.
    let mut in_braces = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'#' => {
                // A comment runs to the end of the line.
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                nesting += 1;
                deepest = deepest.max(nesting);
                if c == b'{' {
                    in_braces += 1;
                }
            }
            b')' | b']' | b'}' => {
                nesting = nesting.saturating_sub(1);
                if c == b'}' {
                    in_braces = in_braces.saturating_sub(1);
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' if in_braces == 0 => {
                operators += 1;
            }
            // `==` and `!=` are one operator of two characters.
            b'=' | b'!' if in_braces == 0 && bytes.get(i + 1) == Some(&b'=') => {
                operators += 1;
                i += 2;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &expr[start..i];
                if in_braces == 0
                    && ["and", "or", "unless", "atan2"]
                        .iter()
                        .any(|k| word.eq_ignore_ascii_case(k))
                {
                    operators += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    operators + deepest
}

/// The index just past the string literal that starts at `start`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_durations_beyond_the_limit_are_refused_before_the_parser() {
        for expr in ["w[9e1012]", "up[5m:1e400]", "up offset -1e13", "up @ 9e99"] {
            let Err(e) = check(expr) else {
                panic!("{expr} was accepted")
            };
            assert!(
                matches!(e, LimitError::NumberOutOfRange { .. }),
                "{expr}: {e}"
            );
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        for expr in [
            "up[90]",
            "up[5m:30]",
            "up offset 1h",
            "up @ 1700000000",
            "x > 1e400",
            "a:b[1e3]",
        ] {
            assert_eq!(check(expr), Ok(()), "{expr}");
            super::super::parse(expr).unwrap();
        }
        // The expression that panicked promql-parser is now a parse error.
        assert!(super::super::parse("w[9e1012]").is_err());
    }

    #[test]
    fn real_rules_are_far_below_the_limit() {
        let rule = r#"sum by (service_name, revision_name) (rate(run_request_count{response_code_class="5xx"}[5m]))
            / sum by (service_name, revision_name) (rate(run_request_count[5m])) > 0.05
            and on (service_name, revision_name) revision:run_requests:increase5m >= 100"#;
        assert!(depth_bound(rule) < 20, "{}", depth_bound(rule));
        assert_eq!(check(rule), Ok(()));
    }

    #[test]
    fn long_operator_chains_and_deep_brackets_are_refused() {
        let chain = vec!["1"; 5000].join("+");
        assert_eq!(
            check(&chain),
            Err(LimitError::TooDeep { depth: 4999 }),
            "a 5,000-term sum"
        );
        let parens = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(matches!(check(&parens), Err(LimitError::TooLong { .. })));
        let parens = format!("{}1{}", "(".repeat(300), ")".repeat(300));
        assert_eq!(check(&parens), Err(LimitError::TooDeep { depth: 300 }));
    }

    #[test]
    fn matchers_strings_and_comments_do_not_count() {
        let e = r#"up{job=~"a+b-c*", instance!="x/y", or="and"} # 1+1+1+1
            + on() vector(1)"#;
        assert_eq!(depth_bound(e), 1 + 1, "one `+`, one level of brackets");
    }

    #[test]
    fn expressions_at_the_limit_parse_and_evaluate_on_a_small_stack() {
        // Debug builds have the largest frames (overflow began between 512
        // and 768 levels of `+` when measured); 2 MiB is a tokio worker's stack.
        let n = MAX_EXPR_DEPTH;
        let shapes = [
            vec!["1"; n].join("+"),
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}vector(1){}", "abs(".repeat(n - 1), ")".repeat(n - 1)),
            format!("{}vector(1){}", "sum(".repeat(n - 1), ")".repeat(n - 1)),
            format!("{}1", "-".repeat(n)),
        ];
        for expr in shapes {
            assert_eq!(check(&expr), Ok(()), "{}", &expr[..20]);
            let handle = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || {
                    let db = crate::tsdb::Tsdb::default();
                    crate::promql::Engine::default()
                        .instant_query(&db, &expr, 0)
                        .is_ok()
                })
                .unwrap();
            assert!(handle.join().expect("evaluation must not overflow"));
        }
    }
}

//! Go's number formatting (`fmt` and `strconv`), which Prometheus templates
//! print with: `{{ $value }}` is Go's `%v` of a float64 (`1e+06`, not `1000000`),
//! and `humanize` is `%.4g`.

/// Decimal digits (no leading/trailing zeros) and the decimal point position:
/// the value is `0.DIGITS × 10^dp`.
struct Decimal {
    digits: String,
    dp: i32,
}

/// The shortest digits that round-trip (`prec == None`) or `prec` significant digits.
fn decimal(v: f64, prec: Option<usize>) -> Decimal {
    let v = v.abs();
    if v == 0.0 {
        return Decimal {
            digits: String::new(),
            dp: 0,
        };
    }
    let s = match prec {
        None => format!("{v:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, v),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.ends_with('0') {
        digits.pop();
    }
    if digits.is_empty() {
        return Decimal { digits, dp: 0 };
    }
    Decimal {
        digits,
        dp: exp + 1,
    }
}

fn special(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        })
    } else {
        None
    }
}

/// `%e` layout from digits: `d.ddde±XX`, with exactly `frac` fraction digits.
fn fmt_e(neg: bool, d: &Decimal, frac: usize, upper: bool) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let digits: Vec<char> = d.digits.chars().collect();
    out.push(*digits.first().unwrap_or(&'0'));
    if frac > 0 {
        out.push('.');
        for i in 1..=frac {
            out.push(*digits.get(i).unwrap_or(&'0'));
        }
    }
    out.push(if upper { 'E' } else { 'e' });
    let exp = if d.digits.is_empty() { 0 } else { d.dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let a = exp.unsigned_abs();
    if a < 10 {
        out.push('0');
    }
    out.push_str(&a.to_string());
    out
}

/// `%f` layout from digits, with exactly `frac` fraction digits.
fn fmt_f(neg: bool, d: &Decimal, frac: usize) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let digits: Vec<char> = d.digits.chars().collect();
    let digit = |i: i32| -> char {
        if i < 0 {
            '0'
        } else {
            *digits.get(i as usize).unwrap_or(&'0')
        }
    };
    if d.dp > 0 {
        for i in 0..d.dp {
            out.push(digit(i));
        }
    } else {
        out.push('0');
    }
    if frac > 0 {
        out.push('.');
        for i in 0..frac as i32 {
            out.push(digit(d.dp + i));
        }
    }
    out
}

/// Go's `strconv.FormatFloat(v, 'g', prec, 64)` (`prec == None` is -1, the shortest).
pub fn format_g(v: f64, prec: Option<usize>, upper: bool) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let neg = v.is_sign_negative() && v != 0.0 || (v == 0.0 && v.is_sign_negative());
    let d = decimal(v, prec);
    let nd = d.digits.len() as i32;
    let shortest = prec.is_none();
    let mut p = match prec {
        Some(0) => 1,
        Some(p) => p as i32,
        None => nd.max(1),
    };
    let mut eprec = p;
    if eprec > nd && nd >= d.dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = d.dp - 1;
    if exp < -4 || exp >= eprec {
        if p > nd {
            p = nd;
        }
        return fmt_e(neg, &d, (p - 1).max(0) as usize, upper);
    }
    if p > d.dp {
        p = nd;
    }
    fmt_f(neg, &d, (p - d.dp).max(0) as usize)
}

/// Go's `%v` of a float64.
pub fn format_v(v: f64) -> String {
    format_g(v, None, false)
}

/// Go's `strconv.FormatFloat(v, 'E', -1, 64)` (promtool prints sample values so).
pub fn format_e_shortest(v: f64) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let d = decimal(v, None);
    let frac = d.digits.len().saturating_sub(1);
    fmt_e(v.is_sign_negative() && v != 0.0, &d, frac, true)
}

/// Go's `%e` with a precision (default 6).
pub fn format_e(v: f64, prec: usize, upper: bool) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let d = decimal(v, Some(prec + 1));
    fmt_e(v.is_sign_negative() && v != 0.0, &d, prec, upper)
}

/// Go's `%f` with a precision (default 6).
pub fn format_f(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    format!("{:.*}", prec, v)
}

/// One `printf` verb with its flags.
#[derive(Default, Clone, Copy)]
pub struct Spec {
    pub minus: bool,
    pub plus: bool,
    pub zero: bool,
    pub space: bool,
    pub sharp: bool,
    pub width: Option<usize>,
    pub prec: Option<usize>,
}

/// Pads `s` to the spec's width.
pub fn pad(s: String, spec: &Spec, numeric: bool) -> String {
    let Some(w) = spec.width else { return s };
    let len = s.chars().count();
    if len >= w {
        return s;
    }
    let fill = w - len;
    if spec.minus {
        format!("{s}{}", " ".repeat(fill))
    } else if spec.zero && numeric {
        let (sign, rest) = match s.strip_prefix(['-', '+']) {
            Some(rest) => (&s[..1], rest),
            None => ("", s.as_str()),
        };
        format!("{sign}{}{rest}", "0".repeat(fill))
    } else {
        format!("{}{s}", " ".repeat(fill))
    }
}

/// Adds the `+` / space sign flag to a formatted number.
pub fn signed(s: String, spec: &Spec) -> String {
    if s.starts_with('-') || s.starts_with('+') {
        return s;
    }
    if spec.plus {
        format!("+{s}")
    } else if spec.space {
        format!(" {s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_e() {
        assert_eq!(format_e_shortest(1.0), "1E+00");
        assert_eq!(format_e_shortest(60.0), "6E+01");
        assert_eq!(format_e_shortest(0.125), "1.25E-01");
    }

    #[test]
    fn percent_v_like_go() {
        assert_eq!(format_v(1.0), "1");
        assert_eq!(format_v(0.5), "0.5");
        assert_eq!(format_v(123456.0), "123456");
        assert_eq!(format_v(1e6), "1e+06");
        assert_eq!(format_v(1234567.0), "1.234567e+06");
        assert_eq!(format_v(0.0001), "0.0001");
        assert_eq!(format_v(0.00001), "1e-05");
        assert_eq!(format_v(-2.5), "-2.5");
        assert_eq!(format_v(0.0), "0");
        assert_eq!(format_v(f64::NAN), "NaN");
        assert_eq!(format_v(f64::INFINITY), "+Inf");
        assert_eq!(format_v(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn percent_g_with_precision() {
        assert_eq!(format_g(1234.56, Some(4), false), "1235");
        assert_eq!(
            format_g(1234.5, Some(4), false),
            "1234",
            "exact halves round to even, as in Go"
        );
        assert_eq!(format_g(12345.6, Some(4), false), "1.235e+04");
        assert_eq!(format_g(0.5, Some(4), false), "0.5");
        assert_eq!(format_g(100.0, Some(4), false), "100");
        assert_eq!(format_g(0.0, Some(4), false), "0");
        assert_eq!(format_g(1.0, Some(4), false), "1");
        assert_eq!(format_g(2.048, Some(4), false), "2.048");
        assert_eq!(format_g(0.000012345, Some(4), false), "1.234e-05");
    }

    #[test]
    fn percent_e_and_f() {
        assert_eq!(format_e(1234.5, 2, false), "1.23e+03");
        assert_eq!(format_e(0.0, 6, false), "0.000000e+00");
        assert_eq!(format_f(2.0 / 3.0, 2), "0.67");
    }
}

//! The template functions that format values (Go's and Prometheus's).

use super::*;

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

pub(super) fn strip_port(s: &str) -> String {
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
pub(super) fn go_sprint(args: &[Value]) -> String {
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
pub(super) fn title(s: &str) -> String {
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

pub(super) fn format_verb(verb: char, spec: &Spec, arg: &Value) -> String {
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

//! Small re-implementations of Go standard-library behaviour that BuildKit's output depends on:
//! `strconv.Quote`, `strconv.Parse*`, `time.ParseDuration`, `path.Clean`, Levenshtein distance for
//! "did you mean" suggestions, docker's `units.RAMInBytes`.

use std::borrow::Cow;
use std::fmt::Write;

/// Go's `unicode.IsSpace`.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `strings.TrimSpace`.
pub(crate) fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Whether Go's `strconv.IsPrint` holds. Approximated from Rust's character properties: controls,
/// spaces other than U+0020, format characters, surrogates and private-use characters are not
/// printable.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c,
        '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}')
}

/// Go's `strconv.Quote` for valid UTF-8 input (what Go's `%q` prints for a string).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// The text of Go's `strconv.NumError` for `fn_name` ("ParseInt", ...).
fn num_error(fn_name: &str, input: &str, range: bool) -> String {
    let why = if range {
        "value out of range"
    } else {
        "invalid syntax"
    };
    format!("strconv.{fn_name}: parsing {}: {why}", quote(input))
}

/// Go's `strconv.ParseUint(s, base, bits)` for bases 2..=36 (no `0x` prefixes, no underscores).
pub(crate) fn parse_uint(s: &str, base: u32, bits: u32) -> Result<u64, String> {
    if s.is_empty() {
        return Err(num_error("ParseUint", s, false));
    }
    let max: u128 = if bits >= 64 {
        u64::MAX as u128
    } else {
        (1u128 << bits) - 1
    };
    let mut value: u128 = 0;
    let mut overflow = false;
    for c in s.chars() {
        let Some(d) = c.to_digit(base) else {
            return Err(num_error("ParseUint", s, false));
        };
        if !overflow {
            value = value * base as u128 + d as u128;
            if value > max {
                overflow = true;
            }
        }
    }
    if overflow {
        return Err(num_error("ParseUint", s, true));
    }
    Ok(value as u64)
}

/// Go's `strconv.ParseInt(s, 10, bits)`.
pub(crate) fn parse_int(s: &str, bits: u32) -> Result<i64, String> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(digits, 10, 64).map_err(|e| {
        if e.ends_with("value out of range") {
            num_error("ParseInt", s, true)
        } else {
            num_error("ParseInt", s, false)
        }
    })? as i128;
    let limit = 1i128 << (bits.min(64) - 1);
    let value = if neg { -magnitude } else { magnitude };
    if value >= limit || value < -limit {
        return Err(num_error("ParseInt", s, true));
    }
    Ok(value as i64)
}

/// Go's `strconv.Atoi`.
pub(crate) fn atoi(s: &str) -> Option<i64> {
    parse_int(s, 64).ok()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub(crate) fn parse_duration(input: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", quote(input));
    let mut s = input;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
            if int_len == 0 && frac_len == 0 {
                return Err(invalid());
            }
        } else if int_len == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map(|(i, _)| i)
            .unwrap_or(s.len());
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", quote(input)));
        }
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit),
                    quote(input)
                ));
            }
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<u128>().map_err(|_| invalid())?
        };
        let mut value = int_value.checked_mul(scale).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            let mut frac_scale = scale;
            for d in frac_part.bytes() {
                frac_scale /= 10;
                value += (d - b'0') as u128 * frac_scale;
                if frac_scale == 0 {
                    break;
                }
            }
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i64::MAX as u128 + neg as u128 {
            return Err(invalid());
        }
    }
    if neg {
        Ok((-(total as i128)) as i64)
    } else {
        Ok(total as i64)
    }
}

/// Go's `time.Duration.String` for the durations BuildKit prints in messages.
pub(crate) fn format_duration(nanos: i64) -> String {
    match nanos {
        0 => "0s".to_string(),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
        n => format!("{n}ns"),
    }
}

/// Docker's `units.RAMInBytes` (binary multiples, `k`/`m`/`g`/`t`/`p`, optional `i`/`b`).
pub(crate) fn ram_in_bytes(size: &str) -> Result<i64, String> {
    let err = || format!("invalid size: '{size}'");
    let number_len = size
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, mut rest) = size.split_at(number_len);
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.contains("..")
    {
        return Err(err());
    }
    rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars().peekable();
    let mut multiplier: f64 = 1.0;
    if let Some(&c) = chars.peek() {
        let exp = match c.to_ascii_lowercase() {
            'k' => Some(1),
            'm' => Some(2),
            'g' => Some(3),
            't' => Some(4),
            'p' => Some(5),
            _ => None,
        };
        if let Some(exp) = exp {
            multiplier = 1024f64.powi(exp);
            chars.next();
        }
    }
    if matches!(chars.peek(), Some('i' | 'I')) {
        chars.next();
    }
    if matches!(chars.peek(), Some('b' | 'B')) {
        chars.next();
    }
    if chars.next().is_some() {
        return Err(err());
    }
    // Docker parses the number with ParseFloat, which rejects "1.2.3".
    let value: f64 = number.parse().map_err(|_| err())?;
    Ok((value * multiplier) as i64)
}

/// Go's `path.Clean`.
pub(crate) fn clean_path(p: &str) -> Cow<'_, str> {
    // A context walk asks about every file, and its paths are clean already: no allocation then.
    let relative = p.strip_prefix('/').unwrap_or(p);
    if relative
        .split('/')
        .all(|part| !matches!(part, "" | "." | ".."))
    {
        Cow::Borrowed(p)
    } else {
        Cow::Owned(lexically_cleaned(p))
    }
}

/// `path.Clean`'s algorithm, for any path.
fn lexically_cleaned(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `path.Base`.
pub(crate) fn base_name(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Levenshtein distance over characters (as `github.com/agext/levenshtein` computes it).
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j + 1] + 1).min(cur[j] + 1).min(prev[j] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// BuildKit's `suggest.Search`: the option closest to `value` within edit distance 2 (the first
/// of equally close ones), or `None` when there is none or `value` is itself an option.
pub(crate) fn closest<S: AsRef<str>>(
    value: &str,
    options: &[S],
    case_sensitive: bool,
) -> Option<String> {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let needle = fold(value);
    let mut best: Option<String> = None;
    let mut min_dist = 3;
    for opt in options {
        let candidate = fold(opt.as_ref());
        if candidate == needle {
            return None;
        }
        let dist = levenshtein(&needle, &candidate);
        if dist < min_dist {
            min_dist = dist;
            best = Some(if case_sensitive || value == value.to_lowercase() {
                candidate
            } else if value == value.to_uppercase() {
                candidate.to_uppercase()
            } else {
                candidate
            });
        }
    }
    best
}

/// BuildKit's `suggest.WrapError`: appends ` (did you mean X?)` when one of `options` is within
/// edit distance 2 of `value`, and nothing when `value` is itself one of them.
pub(crate) fn suggest(
    message: String,
    value: &str,
    options: &[&str],
    case_sensitive: bool,
) -> String {
    match closest(value, options, case_sensitive) {
        Some(m) => format!("{message} (did you mean {m}?)"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote("a\"b\\c\n\u{0}"), "\"a\\\"b\\\\c\\n\\x00\"");
        assert_eq!(quote("♥ ☃"), "\"♥ ☃\"");
        assert_eq!(quote("\u{a0}"), "\"\\u00a0\"");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("-1ms"), Ok(-1_000_000));
        assert_eq!(parse_duration("1.5µs"), Ok(1_500));
        assert_eq!(
            parse_duration("1"),
            Err("time: missing unit in duration \"1\"".into())
        );
        assert_eq!(
            parse_duration("1x"),
            Err("time: unknown unit \"x\" in duration \"1x\"".into())
        );
        assert_eq!(
            parse_duration(""),
            Err("time: invalid duration \"\"".into())
        );
        assert_eq!(format_duration(1_000_000), "1ms");
    }

    #[test]
    fn numbers_parse_like_go() {
        assert_eq!(parse_uint("755", 8, 32), Ok(0o755));
        assert!(parse_uint("8", 8, 32).is_err());
        assert_eq!(parse_int("-3", 32), Ok(-3));
        assert_eq!(
            parse_int("x", 32),
            Err("strconv.ParseInt: parsing \"x\": invalid syntax".into())
        );
        assert_eq!(atoi("+1"), Some(1));
        assert_eq!(ram_in_bytes("64m"), Ok(64 << 20));
        assert_eq!(ram_in_bytes("1 GiB"), Ok(1 << 30));
        assert!(ram_in_bytes("x").is_err());
    }

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(clean_path("/a/../b/./c/"), "/b/c");
        assert_eq!(clean_path("../x"), "../x");
        assert_eq!(clean_path(""), ".");
        for unclean in ["/", "a/", "a//b", "./a", "a/.", "a/../b", "//a"] {
            assert!(matches!(clean_path(unclean), Cow::Owned(_)), "{unclean}");
        }
        for clean in ["a", "a/b.c/d", "/a/b", "..a/b..", ".a"] {
            assert!(
                matches!(clean_path(clean), Cow::Borrowed(p) if p == clean),
                "{clean}"
            );
        }
        // Every path of up to 7 characters over `a . /`: borrowed only where cleaning keeps it.
        let mut paths = vec![String::new()];
        let mut last: Vec<String> = paths.clone();
        for _ in 0..7 {
            last = last
                .iter()
                .flat_map(|p| ["a", ".", "/"].map(|c| format!("{p}{c}")))
                .collect();
            paths.extend(last.iter().cloned());
        }
        assert_eq!(paths.len(), (0..=7).map(|n| 3usize.pow(n)).sum::<usize>());
        for p in &paths {
            assert_eq!(clean_path(p), lexically_cleaned(p), "{p:?}");
        }
        assert_eq!(base_name("/a/b/"), "b");
    }

    #[test]
    fn suggestions_follow_buildkit() {
        assert_eq!(
            suggest(
                "unknown instruction: FORM".into(),
                "FORM",
                &["from", "run"],
                false
            ),
            "unknown instruction: FORM (did you mean FROM?)"
        );
        assert_eq!(suggest("x".into(), "zzzzzz", &["from"], false), "x");
    }
}

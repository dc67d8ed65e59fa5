//! Byte-exact reproduction of Python's `json.dumps(value, indent=4, sort_keys=True)`.
//!
//! Vast.ai's autoscaler signs each request's `auth_data` by serializing it
//! (minus the `signature` and `__request_id` fields) with
//! `json.dumps(message, indent=4, sort_keys=True)` and signing the UTF-8
//! bytes with RSASSA-PKCS1-v1_5/SHA-256. PyWorker verifies by recomputing
//! the same string, so a Rust worker must reproduce those bytes exactly —
//! one differing space, escape or float digit and every signature fails.
//!
//! Reproduced rules (CPython 3 `json` module defaults, `ensure_ascii=True`):
//!
//! * objects: keys sorted by code point (sorted explicitly here, so the
//!   result does not depend on serde_json's `preserve_order` feature), each
//!   item on its own line indented by 4 spaces per level, `": "` between key
//!   and value, `",\n"` between items; `{}` / `[]` when empty;
//! * strings: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`; every other character
//!   outside printable ASCII `0x20..=0x7e` (including DEL `0x7f`) as
//!   lowercase `\uXXXX`, astral characters as a UTF-16 surrogate pair; `/`
//!   is not escaped;
//! * integers: decimal;
//! * floats: Python `repr(float)` — shortest round-trip digits, scientific
//!   notation when the decimal exponent is `< -4` or `>= 16` (`1e-05`,
//!   `1e+16`, two-digit minimum exponent with explicit sign), otherwise
//!   positional with a trailing `.0` for integral values (`242.0`, `-0.0`);
//!   exact halfway ties between two shortest candidates round to an even
//!   last digit as in CPython (`1608882928643910.25` → `1608882928643910.2`),
//!   where Rust's own formatter would round up.
//!
//! Requires serde_json's `float_roundtrip` feature (see [`python_json_dumps`]).

use serde_json::{Map, Number, Value};
use std::fmt::{self, Write};

/// Indentation unit used by `json.dumps(..., indent=4)`.
const INDENT: &str = "    ";

/// Serializes `value` exactly like Python's
/// `json.dumps(value, indent=4, sort_keys=True)` (no trailing newline).
///
/// # Limitations (inherited from `serde_json::Value`, not fixable here)
///
/// * Integers outside `i64::MIN..=u64::MAX` are parsed by serde_json (without
///   its `arbitrary_precision` feature) as `f64`, so `18446744073709551616`
///   prints as `1.8446744073709552e+19`, whereas Python keeps it an `int`.
/// * Non-finite floats cannot occur: serde_json rejects `NaN`/`Infinity`
///   and overflowing literals like `1e400`, which Python would accept.
/// * Strings containing lone surrogates (`"\ud800"`) are rejected by
///   serde_json; Python would accept and re-emit them.
/// * Float *parsing* is serde_json's. Its default fast path is not always
///   correctly rounded (e.g. `12345678901234567.0` lands 1 ULP off, so the
///   printed digits differ from Python's). The crate **must** enable
///   serde_json's `float_roundtrip` feature, which makes parsing exact; the
///   `serde_json_parses_floats_exactly` test fails loudly if it is missing.
#[must_use]
pub fn python_json_dumps(value: &Value) -> String {
    let mut out = String::new();
    // Writing to a `String` cannot fail.
    let _ = write_value(&mut out, value, 0);
    out
}

/// Writes the `python_json_dumps` bytes of the object made of `fields` to `out`, without
/// building the object: `fields` must come sorted by key, each key once. This is how the
/// signed messages are produced from borrowed `auth_data` values, and how the worker's
/// verification cache compares a request's message with a stored one without allocating.
///
/// # Errors
/// Only the ones `out` returns.
pub fn write_sorted_object<'a, W: Write + ?Sized>(
    out: &mut W,
    fields: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> fmt::Result {
    write_entries(out, fields, 0)
}

/// Appends `value` at nesting `depth` to `out`.
fn write_value<W: Write + ?Sized>(out: &mut W, value: &Value, depth: usize) -> fmt::Result {
    match value {
        Value::Null => out.write_str("null"),
        Value::Bool(true) => out.write_str("true"),
        Value::Bool(false) => out.write_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => write_array(out, items, depth),
        Value::Object(map) => write_object(out, map, depth),
    }
}

/// Appends a newline followed by `depth` indentation units.
fn write_newline_indent<W: Write + ?Sized>(out: &mut W, depth: usize) -> fmt::Result {
    out.write_char('\n')?;
    for _ in 0..depth {
        out.write_str(INDENT)?;
    }
    Ok(())
}

fn write_array<W: Write + ?Sized>(out: &mut W, items: &[Value], depth: usize) -> fmt::Result {
    if items.is_empty() {
        return out.write_str("[]");
    }
    out.write_char('[')?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write_newline_indent(out, depth + 1)?;
        write_value(out, item, depth + 1)?;
    }
    write_newline_indent(out, depth)?;
    out.write_char(']')
}

fn write_object<W: Write + ?Sized>(
    out: &mut W,
    map: &Map<String, Value>,
    depth: usize,
) -> fmt::Result {
    // UTF-8 byte order equals code point order, which is how Python sorts str.
    let mut entries: Vec<(&str, &Value)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    write_entries(out, entries, depth)
}

/// An object of `entries`, already sorted, at nesting `depth`.
fn write_entries<'a, W: Write + ?Sized>(
    out: &mut W,
    entries: impl IntoIterator<Item = (&'a str, &'a Value)>,
    depth: usize,
) -> fmt::Result {
    let mut entries = entries.into_iter().peekable();
    if entries.peek().is_none() {
        return out.write_str("{}");
    }
    out.write_char('{')?;
    for (i, (key, item)) in entries.enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write_newline_indent(out, depth + 1)?;
        write_string(out, key)?;
        out.write_str(": ")?;
        write_value(out, item, depth + 1)?;
    }
    write_newline_indent(out, depth)?;
    out.write_char('}')
}

/// Appends `s` as an ASCII-only JSON string literal, escaped like
/// CPython's `c_encode_basestring_ascii`.
fn write_string<W: Write + ?Sized>(out: &mut W, s: &str) -> fmt::Result {
    out.write_char('"')?;
    // Internal: runs of printable ASCII go out as one slice, so a URL is one write.
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{08}' => "\\b",
            '\u{0c}' => "\\f",
            ' '..='~' => continue,
            _ => "",
        };
        out.write_str(&s[plain..i])?;
        plain = i + c.len_utf8();
        if escape.is_empty() {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                push_u_escape(out, *unit)?;
            }
        } else {
            out.write_str(escape)?;
        }
    }
    out.write_str(&s[plain..])?;
    out.write_char('"')
}

/// Appends `\uXXXX` with four lowercase hex digits.
fn push_u_escape<W: Write + ?Sized>(out: &mut W, unit: u16) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.write_str("\\u")?;
    for shift in [12u16, 8, 4, 0] {
        out.write_char(char::from(HEX[usize::from((unit >> shift) & 0xf)]))?;
    }
    Ok(())
}

fn write_number<W: Write + ?Sized>(out: &mut W, n: &Number) -> fmt::Result {
    if let Some(i) = n.as_i64() {
        write!(out, "{i}")
    } else if let Some(u) = n.as_u64() {
        write!(out, "{u}")
    } else if let Some(f) = n.as_f64() {
        out.write_str(&python_float_repr(f))
    } else {
        Ok(())
    }
}

/// Formats a finite `f64` exactly like Python's `repr(float)`.
#[must_use]
fn python_float_repr(f: f64) -> String {
    let (digits, exponent) = python_shortest_digits(f.abs());
    let mut out = String::with_capacity(digits.len() + 8);
    if f.is_sign_negative() {
        out.push('-');
    }
    if (-4..16).contains(&exponent) {
        push_positional(&mut out, &digits, exponent);
    } else {
        push_scientific(&mut out, &digits, exponent);
    }
    out
}

/// Shortest round-trip significant digits of `a >= 0` and the decimal
/// exponent of the first digit, as chosen by Python (David Gay's `dtoa`
/// mode 0), e.g. `242.0` → `("242", 2)`.
///
/// Rust's `{:e}` gives the same shortest, closest digits except when the
/// exact binary value lies exactly halfway between two shortest candidates
/// (e.g. `1608882928643910.25`): Rust rounds the tie up, Python rounds it to
/// an even last digit (`...910.2`). [`half_even_tie_digits`] corrects that.
fn python_shortest_digits(a: f64) -> (String, i32) {
    let (digits, exponent) = split_scientific(&format!("{a:e}"));
    match half_even_tie_digits(a, &digits, exponent) {
        Some(even) => (even, exponent),
        None => (digits, exponent),
    }
}

/// Splits Rust `{:e}` output such as `2.42e2` into (`"242"`, `2`).
fn split_scientific(sci: &str) -> (String, i32) {
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// If `a`'s exact value is a tie between `digits` and its neighbour in the
/// last place, returns the neighbour when it is the one with an even last
/// digit and still round-trips to `a`; otherwise `None`.
fn half_even_tie_digits(a: f64, digits: &str, exponent: i32) -> Option<String> {
    let n = digits.len();
    // Cheap filter: one more significant digit must round to a trailing 5.
    let (longer, longer_exp) = split_scientific(&format!("{a:.n$e}"));
    if longer_exp != exponent || !longer.ends_with('5') {
        return None;
    }
    // Exact expansion (an f64 has at most 767 significant digits) must be
    // exactly those n + 1 digits: then `a` is precisely halfway.
    let (exact, _) = split_scientific(&format!("{a:.800e}"));
    if exact.trim_end_matches('0') != longer {
        return None;
    }
    let truncated = longer.get(..n)?;
    let last = truncated.bytes().last()?.checked_sub(b'0')?;
    if last == 9 {
        // Rounding up would carry; both dtoa flavours agree in that case.
        return None;
    }
    let even = if last % 2 == 0 {
        truncated.to_owned()
    } else {
        format!("{}{}", &truncated[..n - 1], last + 1)
    };
    let round_trips = format!("0.{even}e{}", exponent + 1).parse::<f64>() == Ok(a);
    (even != digits && round_trips).then_some(even)
}

/// `digits` with the decimal point after `exponent + 1` digits, e.g.
/// `("242", 2)` → `242.0`, `("1", -4)` → `0.0001`.
fn push_positional(out: &mut String, digits: &str, exponent: i32) {
    let point = exponent + 1;
    match usize::try_from(point) {
        Ok(0) | Err(_) => {
            out.push_str("0.");
            for _ in 0..point.unsigned_abs() {
                out.push('0');
            }
            out.push_str(digits);
        }
        Ok(p) if p >= digits.len() => {
            out.push_str(digits);
            for _ in digits.len()..p {
                out.push('0');
            }
            out.push_str(".0");
        }
        Ok(p) => {
            let (int_part, frac_part) = digits.split_at(p);
            out.push_str(int_part);
            out.push('.');
            out.push_str(frac_part);
        }
    }
}

/// `d[.ddd]e±XX` with at least two exponent digits, e.g. `1e-05`, `1.5e+300`.
fn push_scientific(out: &mut String, digits: &str, exponent: i32) {
    let (first, rest) = digits.split_at(digits.len().min(1));
    out.push_str(first);
    if !rest.is_empty() {
        out.push('.');
        out.push_str(rest);
    }
    out.push('e');
    out.push(if exponent < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", exponent.unsigned_abs()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden cases produced by `tests/fixtures/make_fixtures.py`.
    /// (Path is relative to the crate root, so it survives moving this file.)
    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/canonical.json"
    ));

    fn case_str<'a>(case: &'a Value, field: &str) -> &'a str {
        case.get(field)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("fixture case missing string field {field}: {case}"))
    }

    #[test]
    fn matches_python_fixture_byte_for_byte() {
        let cases: Vec<Value> = serde_json::from_str(FIXTURE).expect("fixture parses");
        assert!(cases.len() > 40, "fixture unexpectedly small");
        let mut failures = Vec::new();
        for case in &cases {
            let name = case_str(case, "name");
            let input = case_str(case, "input");
            let expected = case_str(case, "expected");
            let value: Value = serde_json::from_str(input)
                .unwrap_or_else(|e| panic!("case {name}: input does not parse: {e}"));
            let actual = python_json_dumps(&value);
            if actual != expected {
                failures.push(format!(
                    "{name}:\n  expected {expected:?}\n  actual   {actual:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    }

    #[test]
    fn float_repr_edge_cases() {
        let cases: &[(f64, &str)] = &[
            (242.0, "242.0"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1e-7, "1e-07"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000123, "0.000123"),
            (1.5e300, "1.5e+300"),
            (1.234e-300, "1.234e-300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1234567890123456.0, "1234567890123456.0"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (-123.456, "-123.456"),
            (0.1 + 0.2, "0.30000000000000004"),
            // Exact halfway ties: Python rounds the last digit half-to-even.
            (1_608_882_928_643_910.0 + 0.25, "1608882928643910.2"),
            (-(79_958_342_745_004.0 + 0.625), "-79958342745004.62"),
            (0.5, "0.5"),
            (2.5, "2.5"),
        ];
        for (f, expected) in cases {
            assert_eq!(python_float_repr(*f), *expected, "repr({f:?})");
        }
    }

    #[test]
    fn serde_json_parses_floats_exactly() {
        // Without serde_json's `float_roundtrip` feature these parse 1 ULP off.
        for (text, expected) in [
            ("12345678901234567.0", 12345678901234567.0_f64),
            ("9007199254740993.0", 9007199254740992.0_f64),
        ] {
            let parsed: f64 = serde_json::from_str(text).expect("parses");
            assert_eq!(
                parsed.to_bits(),
                expected.to_bits(),
                "{text}: enable serde_json feature `float_roundtrip`"
            );
        }
    }

    #[test]
    fn preserves_key_sorting_regardless_of_map_order() {
        let mut map = Map::new();
        map.insert("b".into(), Value::from(1));
        map.insert("a".into(), Value::from(2));
        assert_eq!(
            python_json_dumps(&Value::Object(map)),
            "{\n    \"a\": 2,\n    \"b\": 1\n}"
        );
    }

    #[test]
    fn big_integer_limitation_is_documented_behaviour() {
        // Python would print 18446744073709551616; serde_json yields an f64.
        let value: Value = serde_json::from_str("18446744073709551616").expect("parses");
        assert_eq!(python_json_dumps(&value), "1.8446744073709552e+19");
    }
}

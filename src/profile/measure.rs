//! Formula variables: where each value of a request comes from.
//!
//! A variable of a workload formula is bound to a JSON path of the request body, read one
//! of four ways, with an optional default for when the value is absent or unreadable:
//!
//! | binding | value |
//! |---|---|
//! | `"max_tokens"` | the number at that path (a numeric string counts) |
//! | `"chars(input)"` | characters of the string there, or summed over a list of strings (a token id counts [`CHARS_PER_TOKEN`]) |
//! | `"pixels(size)"` | width × height of an OpenAI `"1024x1024"` size string |
//! | `"count(documents)"` | items of the list there (any other value counts 1) |
//! | `"… or 1"` | any of the above, with the number after `or` when it has no value |
//!
//! One variable needs no binding: [`BODY_BYTES`], the size of the request body the backend
//! receives (an upload's `Content-Length`), for bodies that are not JSON.

use super::workload::{JsonPath, RuleError, as_number};
use serde_json::Value;

/// The built-in variable: bytes of the request body the backend receives.
pub const BODY_BYTES: &str = "body_bytes";

/// Characters one token id counts for in `chars(…)`: pre-tokenised input (embeddings of
/// token arrays) lands on the same scale as text. Vast's worker uses the same figure.
pub const CHARS_PER_TOKEN: f64 = 4.0;

/// How a variable reads the value at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The number there.
    Number,
    /// Characters of a string, or of every string in a (nested) list.
    Chars,
    /// Width × height of a `"WIDTHxHEIGHT"` string.
    Pixels,
    /// Items of a list; any other value is one item.
    Count,
}

/// A variable's binding: a path, how it is read, and the value when it cannot be.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    /// How the value is read.
    pub measure: Measure,
    /// Where in the request body.
    pub path: JsonPath,
    /// The value when the path is absent or its value unreadable; `None` fails the rule.
    pub default: Option<f64>,
}

impl Var {
    /// The number at `path`, without a default.
    pub fn number(path: JsonPath) -> Var {
        Var {
            measure: Measure::Number,
            path,
            default: None,
        }
    }

    /// Parses a binding: `path`, `chars(path)`, `pixels(path)` or `count(path)`, optionally
    /// followed by `or NUMBER`.
    pub fn parse(src: &str) -> Result<Var, String> {
        let (source, default) = match src.rsplit_once(" or ") {
            Some((source, default)) => {
                let d: f64 = default
                    .trim()
                    .parse()
                    .map_err(|_| format!("the default after `or` in {src:?} must be a number"))?;
                if !d.is_finite() {
                    return Err(format!("the default after `or` in {src:?} must be finite"));
                }
                (source.trim(), Some(d))
            }
            None => (src.trim(), None),
        };
        let (measure, path) = match source.split_once('(') {
            Some((name, rest)) => {
                let measure = match name.trim() {
                    "chars" => Measure::Chars,
                    "pixels" => Measure::Pixels,
                    "count" => Measure::Count,
                    other => {
                        return Err(format!(
                            "unknown measure {other:?} in {src:?} (known: chars, pixels, count)"
                        ));
                    }
                };
                let path = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("missing ) in {src:?}"))?;
                (measure, path)
            }
            None => (Measure::Number, source),
        };
        let path = JsonPath::parse(path)?;
        Ok(Var {
            measure,
            path,
            default,
        })
    }

    /// The variable's value in `json`: what is at its path, else its default.
    pub fn value(&self, json: &Value) -> Result<f64, RuleError> {
        let found = self.path.get(json).and_then(|v| match self.measure {
            Measure::Number => as_number(v),
            Measure::Chars => chars(v),
            Measure::Pixels => pixels(v),
            Measure::Count => match v {
                Value::Array(items) => Some(items.len() as f64),
                Value::Null => None,
                _ => Some(1.0),
            },
        });
        found.or(self.default).ok_or_else(|| {
            let what = match self.measure {
                Measure::Number => "no number there",
                Measure::Chars => "no string or list of strings there",
                Measure::Pixels => "no WIDTHxHEIGHT size there",
                Measure::Count => "nothing there",
            };
            RuleError::Unreadable(format!("{self}: {what}"))
        })
    }
}

impl std::fmt::Display for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.measure {
            Measure::Number => write!(f, "{}", self.path)?,
            Measure::Chars => write!(f, "chars({})", self.path)?,
            Measure::Pixels => write!(f, "pixels({})", self.path)?,
            Measure::Count => write!(f, "count({})", self.path)?,
        }
        match self.default {
            Some(d) => write!(f, " or {d}"),
            None => Ok(()),
        }
    }
}

/// Characters of a string (Unicode scalar values, as Python's `len`), summed over lists;
/// a number in a list is a token id.
fn chars(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => Some(s.chars().count() as f64),
        Value::Array(items) => items.iter().try_fold(0.0, |sum, item| {
            let n = match item {
                Value::Number(_) => CHARS_PER_TOKEN,
                other => chars(other)?,
            };
            Some(sum + n)
        }),
        _ => None,
    }
}

/// Width × height of `"1024x1024"` (either case of `x`, spaces around the numbers allowed).
fn pixels(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    let (w, h) = s.split_once(['x', 'X'])?;
    let w: u64 = w.trim().parse().ok()?;
    let h: u64 = h.trim().parse().ok()?;
    Some(w as f64 * h as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(binding: &str, body: Value) -> Result<f64, RuleError> {
        Var::parse(binding).unwrap().value(&body)
    }

    #[test]
    fn chars_count_strings_lists_and_token_ids() {
        assert_eq!(value("chars(input)", json!({"input": "héllo"})), Ok(5.0));
        assert_eq!(
            value("chars(input)", json!({"input": ["ab", "cde"]})),
            Ok(5.0)
        );
        assert_eq!(value("chars(input)", json!({"input": [1, 2, 3]})), Ok(12.0));
        assert_eq!(
            value("chars(input)", json!({"input": [[1, 2], "abcd"]})),
            Ok(12.0)
        );
        assert_eq!(value("chars(query)", json!({"query": ""})), Ok(0.0));
        let e = value("chars(input)", json!({"input": {"text": "x"}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "chars(input): no string or list of strings there"
        );
        assert!(value("chars(input)", json!({"input": ["a", null]})).is_err());
    }

    #[test]
    fn pixels_read_an_openai_size() {
        assert_eq!(
            value("pixels(size)", json!({"size": "1024x1024"})),
            Ok(1048576.0)
        );
        assert_eq!(
            value("pixels(size)", json!({"size": " 512 X 256"})),
            Ok(131072.0)
        );
        for bad in [json!("auto"), json!("x1"), json!("-1x5"), json!(1024)] {
            assert!(
                value("pixels(size)", json!({"size": bad})).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn count_gives_the_items_of_a_list() {
        assert_eq!(
            value("count(documents)", json!({"documents": ["a", "b"]})),
            Ok(2.0)
        );
        assert_eq!(
            value("count(documents)", json!({"documents": "a"})),
            Ok(1.0)
        );
        assert!(value("count(documents)", json!({"documents": null})).is_err());
    }

    #[test]
    fn a_default_stands_in_for_an_absent_or_unreadable_value() {
        let b = "pixels(size) or 1048576";
        assert_eq!(value(b, json!({})), Ok(1048576.0));
        assert_eq!(value(b, json!({"size": "auto"})), Ok(1048576.0));
        assert_eq!(value(b, json!({"size": "2x3"})), Ok(6.0));
        assert_eq!(value("n or 1", json!({"n": null})), Ok(1.0));
        assert_eq!(value("n or 1", json!({"n": "4"})), Ok(4.0));
        assert_eq!(
            value("n", json!({})).unwrap_err().to_string(),
            "n: no number there"
        );
    }

    #[test]
    fn bindings_parse_and_print_back() {
        for src in [
            "a.b",
            "chars(input)",
            "pixels(data.0.size) or 1048576",
            "count(documents) or 0",
            "n or -2.5",
        ] {
            assert_eq!(Var::parse(src).unwrap().to_string(), src);
        }
        for (src, needle) in [
            ("len(input)", "unknown measure \"len\""),
            ("chars(input", "missing )"),
            ("n or many", "must be a number"),
            ("n or inf", "must be finite"),
            ("chars(a..b)", "empty segment"),
        ] {
            let e = Var::parse(src).unwrap_err();
            assert!(e.contains(needle), "{src}: {e}");
        }
    }
}

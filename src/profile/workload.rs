//! Workload rules: how many workload units a request is worth.
//!
//! A rule reads the request payload (a JSON path such as `max_tokens`, a constant, or a
//! formula over named JSON paths such as `width * height * steps / 1000`), and optionally
//! the response (`usage.completion_tokens`) when the benchmark has one to read.

use serde_json::Value;
use std::collections::BTreeMap;

/// A dotted path into JSON: object keys, or array indexes for arrays (`choices.0.text`).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<String>);

impl JsonPath {
    /// Parses `a.b.0.c`; empty segments are an error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<String> = s.trim().split('.').map(str::to_string).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("invalid JSON path {s:?}: empty segment"));
        }
        Ok(Self(parts))
    }

    /// The value at this path.
    pub fn get<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for part in &self.0 {
            v = match v {
                Value::Object(o) => o.get(part)?,
                Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The number at this path (a numeric string counts).
    pub fn number(&self, v: &Value) -> Option<f64> {
        match self.get(v)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Most tokens (numbers, names, operators, parentheses) a formula may have.
pub const MAX_TOKENS: usize = 256;

/// An arithmetic expression over numbers and named variables: `+ - * /`, parentheses, at
/// most [`MAX_TOKENS`] tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Num(f64),
    /// A variable, bound to a JSON path.
    Var(String),
    /// A binary operation.
    Op(Box<Expr>, char, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
}

impl Expr {
    /// Parses an expression.
    pub fn parse(src: &str) -> Result<Expr, String> {
        let tokens = tokenize(src)?;
        if tokens.len() > MAX_TOKENS {
            // Parsing, evaluating and dropping recurse once per nesting level.
            return Err(format!(
                "formula is too long: more than {MAX_TOKENS} tokens"
            ));
        }
        let mut p = Parser { tokens, pos: 0 };
        let e = p.sum()?;
        match p.tokens.get(p.pos) {
            None => Ok(e),
            Some(t) => Err(format!("unexpected {t:?} in formula {src:?}")),
        }
    }

    /// Names of the variables the expression uses.
    pub fn vars(&self, out: &mut Vec<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(v) => out.push(v.clone()),
            Expr::Op(a, _, b) => {
                a.vars(out);
                b.vars(out);
            }
            Expr::Neg(a) => a.vars(out),
        }
    }

    /// Evaluates with `var` giving variable values; `None` when a variable has no value.
    pub fn eval(&self, var: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
        Some(match self {
            Expr::Num(n) => *n,
            Expr::Var(v) => var(v)?,
            Expr::Neg(a) => -a.eval(var)?,
            Expr::Op(a, op, b) => {
                let (a, b) = (a.eval(var)?, b.eval(var)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ if b == 0.0 => return None,
                    _ => a / b,
                }
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Sym(char),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push(Tok::Num(
                s.parse()
                    .map_err(|_| format!("bad number {s:?} in formula"))?,
            ));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if "+-*/()".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(format!("unexpected character {c:?} in formula {src:?}"));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_sym(&self, set: &str) -> Option<char> {
        match self.tokens.get(self.pos) {
            Some(Tok::Sym(c)) if set.contains(*c) => Some(*c),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut e = self.product()?;
        while let Some(op) = self.peek_sym("+-") {
            self.pos += 1;
            e = Expr::Op(Box::new(e), op, Box::new(self.product()?));
        }
        Ok(e)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut e = self.atom()?;
        while let Some(op) = self.peek_sym("*/") {
            self.pos += 1;
            e = Expr::Op(Box::new(e), op, Box::new(self.atom()?));
        }
        Ok(e)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let tok = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match tok {
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Ident(v)) => Ok(Expr::Var(v)),
            Some(Tok::Sym('-')) => Ok(Expr::Neg(Box::new(self.atom()?))),
            Some(Tok::Sym('(')) => {
                let e = self.sum()?;
                if self.peek_sym(")").is_none() {
                    return Err("missing ) in formula".into());
                }
                self.pos += 1;
                Ok(e)
            }
            Some(t) => Err(format!("unexpected {t:?} in formula")),
            None => Err("formula ends too early".into()),
        }
    }
}

/// How the workload of a request is counted from its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestRule {
    /// The same number for every request.
    Constant(f64),
    /// A number in the payload.
    Path(JsonPath),
    /// A formula over numbers in the payload.
    Formula {
        /// The expression.
        expr: Expr,
        /// Variable → path in the payload.
        vars: BTreeMap<String, JsonPath>,
    },
}

impl RequestRule {
    /// The workload of `payload`, when the rule finds what it needs and it is positive.
    pub fn eval(&self, payload: &Value) -> Option<f64> {
        let v = match self {
            RequestRule::Constant(c) => *c,
            RequestRule::Path(p) => p.number(payload)?,
            RequestRule::Formula { expr, vars } => {
                expr.eval(&|name| vars.get(name)?.number(payload))?
            }
        };
        (v.is_finite() && v > 0.0).then_some(v)
    }
}

/// A profile's workload rule.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRule {
    /// From the request payload.
    pub request: Option<RequestRule>,
    /// From the backend's response (benchmark only), preferred when present.
    pub response: Option<JsonPath>,
}

impl WorkloadRule {
    /// Workload of a benchmark request from its response, else its payload.
    pub fn measured(&self, payload: &Value, response: Option<&Value>) -> Option<f64> {
        let from_response = self
            .response
            .as_ref()
            .zip(response)
            .and_then(|(p, r)| p.number(r))
            .filter(|v| v.is_finite() && *v > 0.0);
        from_response.or_else(|| self.request.as_ref()?.eval(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formula_follows_precedence_and_parentheses() {
        let e = Expr::parse("width * height * steps / 1000").unwrap();
        let vals = |n: &str| match n {
            "width" | "height" => Some(512.0),
            "steps" => Some(20.0),
            _ => None,
        };
        assert_eq!(e.eval(&vals), Some(5242.88));
        assert_eq!(
            Expr::parse("(1 + 2) * -3").unwrap().eval(&|_| None),
            Some(-9.0)
        );
        assert_eq!(Expr::parse("1 + 2 * 3").unwrap().eval(&|_| None), Some(7.0));
        assert!(Expr::parse("1 +").is_err());
        assert!(Expr::parse("a $ b").is_err());
        assert!(Expr::parse("(1").is_err());
        // Long formulas are refused before the recursive parser could overflow the stack.
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(Expr::parse(&deep).unwrap_err().contains("too long"));
        assert!(Expr::parse(&"1+".repeat(200_000)).is_err());
    }

    #[test]
    fn paths_walk_objects_and_arrays() {
        let v = json!({"usage": {"completion_tokens": 7}, "choices": [{"n": "3"}], "g": {"5": {"w": 512}}});
        assert_eq!(
            JsonPath::parse("usage.completion_tokens")
                .unwrap()
                .number(&v),
            Some(7.0)
        );
        assert_eq!(
            JsonPath::parse("choices.0.n").unwrap().number(&v),
            Some(3.0)
        );
        assert_eq!(JsonPath::parse("g.5.w").unwrap().number(&v), Some(512.0));
        assert_eq!(JsonPath::parse("g.6.w").unwrap().number(&v), None);
        assert!(JsonPath::parse("a..b").is_err());
    }

    #[test]
    fn response_wins_over_request_when_present() {
        let rule = WorkloadRule {
            request: Some(RequestRule::Path(JsonPath::parse("max_tokens").unwrap())),
            response: Some(JsonPath::parse("usage.completion_tokens").unwrap()),
        };
        let payload = json!({"max_tokens": 500});
        assert_eq!(
            rule.measured(
                &payload,
                Some(&json!({"usage": {"completion_tokens": 120}}))
            ),
            Some(120.0)
        );
        assert_eq!(rule.measured(&payload, Some(&json!({}))), Some(500.0));
        assert_eq!(rule.measured(&payload, None), Some(500.0));
        assert_eq!(rule.measured(&json!({"max_tokens": 0}), None), None);
    }
}

//! Workload formulas: arithmetic over named values, with the few functions route rules need.
//!
//! `+ - * /`, unary minus, parentheses, and three functions: `clamp(x, lo, hi)`,
//! `min(a, …)` and `max(a, …)`, enough for Vast's `500 × clamp(size / reference, 0.1, 8)`
//! form. A formula has at most [`MAX_TOKENS`] tokens: parsing, evaluating and dropping
//! recurse once per nesting level, so the bound on tokens is also the bound on the stack.

use super::workload::RuleError;

/// Most tokens (numbers, names, operators, commas, parentheses) a formula may have.
pub const MAX_TOKENS: usize = 256;

/// A function a formula may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `clamp(x, lo, hi)`: `min(max(x, lo), hi)`.
    Clamp,
    /// `min(a, …)`: the smallest argument.
    Min,
    /// `max(a, …)`: the largest argument.
    Max,
}

impl Func {
    const ALL: [Func; 3] = [Func::Clamp, Func::Min, Func::Max];

    /// The name a formula calls it by.
    pub fn name(self) -> &'static str {
        match self {
            Func::Clamp => "clamp",
            Func::Min => "min",
            Func::Max => "max",
        }
    }

    fn named(name: &str) -> Option<Func> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    fn check_arity(self, n: usize) -> Result<(), String> {
        match self {
            Func::Clamp if n != 3 => Err(format!("clamp takes 3 arguments (x, lo, hi), not {n}")),
            Func::Min | Func::Max if n == 0 => Err(format!("{} needs an argument", self.name())),
            _ => Ok(()),
        }
    }

    /// Applies the function. A NaN argument makes the result NaN (never a silently
    /// chosen bound), so the rule fails as non-finite.
    fn apply(self, args: &[f64]) -> f64 {
        if args.iter().any(|a| a.is_nan()) {
            return f64::NAN;
        }
        match self {
            Func::Clamp => args[0].max(args[1]).min(args[2]),
            Func::Min => args.iter().copied().fold(f64::INFINITY, f64::min),
            Func::Max => args.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// An arithmetic expression over numbers and named variables.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Num(f64),
    /// A variable: bound to the request by the rule's `vars`, or built in (`body_bytes`).
    Var(String),
    /// A binary operation.
    Op(Box<Expr>, char, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// A function call.
    Call(Func, Vec<Expr>),
}

impl Expr {
    /// Parses an expression.
    pub fn parse(src: &str) -> Result<Expr, String> {
        let tokens = tokenize(src)?;
        if tokens.len() > MAX_TOKENS {
            return Err(format!(
                "formula is too long: more than {MAX_TOKENS} tokens"
            ));
        }
        let mut p = Parser { tokens, pos: 0 };
        let e = p.sum()?;
        match p.tokens.get(p.pos) {
            None => Ok(e),
            Some(t) => Err(format!("unexpected {t} in formula {src:?}")),
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
            Expr::Call(_, args) => args.iter().for_each(|a| a.vars(out)),
        }
    }

    /// Whether the expression uses the variable `name`.
    pub fn mentions(&self, name: &str) -> bool {
        match self {
            Expr::Num(_) => false,
            Expr::Var(v) => v == name,
            Expr::Op(a, _, b) => a.mentions(name) || b.mentions(name),
            Expr::Neg(a) => a.mentions(name),
            Expr::Call(_, args) => args.iter().any(|a| a.mentions(name)),
        }
    }

    /// Evaluates with `var` giving variable values. Division by zero is an error; other
    /// results (infinite, NaN) are returned for the caller to judge.
    pub fn eval(&self, var: &dyn Fn(&str) -> Result<f64, RuleError>) -> Result<f64, RuleError> {
        Ok(match self {
            Expr::Num(n) => *n,
            Expr::Var(v) => var(v)?,
            Expr::Neg(a) => -a.eval(var)?,
            Expr::Op(a, op, b) => {
                let (a, b) = (a.eval(var)?, b.eval(var)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ if b == 0.0 => return Err(RuleError::DivisionByZero),
                    _ => a / b,
                }
            }
            Expr::Call(f, args) => {
                // Internal: at most MAX_TOKENS arguments in all, so a small vector.
                let values = args
                    .iter()
                    .map(|a| a.eval(var))
                    .collect::<Result<Vec<f64>, _>>()?;
                f.apply(&values)
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

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Num(n) => write!(f, "number {n}"),
            Tok::Ident(s) => write!(f, "name {s:?}"),
            Tok::Sym(c) => write!(f, "{c:?}"),
        }
    }
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
        } else if "+-*/(),".contains(c) {
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

    fn expect_close(&mut self) -> Result<(), String> {
        if self.peek_sym(")").is_none() {
            return Err("missing ) in formula".into());
        }
        self.pos += 1;
        Ok(())
    }

    fn sum(&mut self) -> Result<Expr, String> {
        self.chain("+-", Self::product)
    }

    fn product(&mut self) -> Result<Expr, String> {
        self.chain("*/", Self::atom)
    }

    /// Operands parsed by `operand`, joined left to right by the operators in `ops`.
    fn chain(
        &mut self,
        ops: &str,
        operand: fn(&mut Self) -> Result<Expr, String>,
    ) -> Result<Expr, String> {
        let mut e = operand(self)?;
        while let Some(op) = self.peek_sym(ops) {
            self.pos += 1;
            e = Expr::Op(Box::new(e), op, Box::new(operand(self)?));
        }
        Ok(e)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let tok = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match tok {
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Ident(name)) if self.peek_sym("(").is_some() => {
                self.pos += 1;
                self.call(&name)
            }
            Some(Tok::Ident(v)) => Ok(Expr::Var(v)),
            Some(Tok::Sym('-')) => Ok(Expr::Neg(Box::new(self.atom()?))),
            Some(Tok::Sym('(')) => {
                let e = self.sum()?;
                self.expect_close()?;
                Ok(e)
            }
            Some(t) => Err(format!("unexpected {t} in formula")),
            None => Err("formula ends too early".into()),
        }
    }

    /// The arguments of `name(` up to its `)`.
    fn call(&mut self, name: &str) -> Result<Expr, String> {
        let func = Func::named(name).ok_or_else(|| {
            let known: Vec<&str> = Func::ALL.iter().map(|f| f.name()).collect();
            format!(
                "unknown function {name:?} in formula (known: {})",
                known.join(", ")
            )
        })?;
        let mut args = Vec::new();
        if self.peek_sym(")").is_none() {
            args.push(self.sum()?);
            while self.peek_sym(",").is_some() {
                self.pos += 1;
                args.push(self.sum()?);
            }
        }
        self.expect_close()?;
        func.check_arity(args.len())?;
        Ok(Expr::Call(func, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, var: &dyn Fn(&str) -> Result<f64, RuleError>) -> Result<f64, RuleError> {
        Expr::parse(src).unwrap().eval(var)
    }

    fn none(name: &str) -> Result<f64, RuleError> {
        Err(RuleError::Unreadable(name.to_string()))
    }

    #[test]
    fn formula_follows_precedence_and_parentheses() {
        let vals = |n: &str| match n {
            "width" | "height" => Ok(512.0),
            "steps" => Ok(20.0),
            other => none(other),
        };
        assert_eq!(eval("width * height * steps / 1000", &vals), Ok(5242.88));
        assert_eq!(eval("(1 + 2) * -3", &none), Ok(-9.0));
        assert_eq!(eval("1 + 2 * 3", &none), Ok(7.0));
        assert!(Expr::parse("1 +").is_err());
        assert!(Expr::parse("a $ b").is_err());
        assert!(Expr::parse("(1").is_err());
        // Long formulas are refused before the recursive parser could overflow the stack.
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(Expr::parse(&deep).unwrap_err().contains("too long"));
        assert!(Expr::parse(&"1+".repeat(200_000)).is_err());
        let calls = format!("{}1{}", "max(".repeat(200), ")".repeat(200));
        assert!(Expr::parse(&calls).unwrap_err().contains("too long"));
    }

    #[test]
    fn clamp_min_and_max_bound_a_value() {
        let x = |v: f64| move |_: &str| Ok(v);
        let vast = "500 * clamp(x / 600, 0.1, 8)";
        assert_eq!(eval(vast, &x(600.0)), Ok(500.0));
        assert_eq!(eval(vast, &x(1200.0)), Ok(1000.0));
        assert_eq!(eval(vast, &x(1.0)), Ok(50.0));
        assert_eq!(eval(vast, &x(1e9)), Ok(4000.0));
        assert_eq!(eval(vast, &x(f64::INFINITY)), Ok(4000.0));
        assert_eq!(eval("min(x, 3, 2)", &x(5.0)), Ok(2.0));
        assert_eq!(eval("max(x)", &x(5.0)), Ok(5.0));
        assert_eq!(eval("max(1, min(x, 4)) + 1", &x(0.0)), Ok(2.0));
        // A NaN argument is never replaced by a bound.
        assert!(eval("clamp(x, 0.1, 8)", &x(f64::NAN)).unwrap().is_nan());
        assert!(eval("max(x, 1)", &x(f64::NAN)).unwrap().is_nan());
        // A variable named like a function is still a variable without parentheses.
        assert_eq!(eval("min + 1", &x(1.0)), Ok(2.0));
    }

    #[test]
    fn function_mistakes_are_parse_errors() {
        for (src, needle) in [
            ("clamp(x, 1)", "clamp takes 3 arguments"),
            ("min()", "min needs an argument"),
            ("sqrt(x)", "unknown function \"sqrt\""),
            ("max(1, 2", "missing )"),
            ("max(1,, 2)", "unexpected ','"),
            ("1, 2", "unexpected ','"),
        ] {
            let e = Expr::parse(src).unwrap_err();
            assert!(e.contains(needle), "{src}: {e}");
        }
    }

    #[test]
    fn division_by_zero_and_missing_values_are_errors() {
        assert_eq!(
            eval("1 / (x - x)", &|_| Ok(3.0)),
            Err(RuleError::DivisionByZero)
        );
        assert_eq!(
            eval("clamp(a, 0, 1)", &none),
            Err(RuleError::Unreadable("a".into()))
        );
        let e = Expr::parse("clamp(a * 2, b, max(c, 1))").unwrap();
        let mut vars = Vec::new();
        e.vars(&mut vars);
        assert_eq!(vars, ["a", "b", "c"]);
        assert!(e.mentions("c") && !e.mentions("d"));
    }
}

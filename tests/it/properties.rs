//! Property tests through the public API: the canonical message (Python's `json.dumps`),
//! backend profiles, body templates and workload rules. Arbitrary input gives a value or a
//! clean error, never a panic; accepted input reads back.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's own variable), default 256;
//! `scripts/fuzz.sh` runs many more. The envelope and setting parsers have their own
//! `proptests` modules beside them (they test private functions).

use proptest::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};
use vespa::env::MAX_SECS;
use vespa::profile::template::{RenderContext, Template};
use vespa::profile::workload::{Expr, JsonPath, RequestRule, Var, WorkloadRule};
use vespa::profile::{BUILT_IN, Profile, RequestView};
use vespa::signing::canonical::python_json_dumps;
use vespa::signing::{legacy_message, url_message};

/// JSON values whose leaves come from `string` and `number`.
fn json_with(
    string: BoxedStrategy<String>,
    number: BoxedStrategy<Value>,
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        string.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((string.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn integer() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0, u64::MAX, i64::MAX as u64]).prop_map(Value::from),
        Just(Value::from(i64::MIN)),
    ]
    .boxed()
}

fn finite_float() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![0.0, -0.0, 1e16, 1e-5, 1e-4, 242.0, 5e-324, f64::MAX]),
    ]
    .prop_filter_map("finite", |f| {
        serde_json::Number::from_f64(f).map(Value::Number)
    })
    .boxed()
}

/// Any JSON value serde_json can hold.
fn any_json() -> impl Strategy<Value = Value> {
    json_with(
        ".{0,10}".boxed(),
        prop_oneof![integer(), finite_float()].boxed(),
    )
}

/// `v` as serde_json prints it with a 4-space indent and sorted keys: the same layout as
/// Python's `json.dumps(v, indent=4, sort_keys=True)` wherever the two agree on scalars
/// (ASCII strings without DEL, integers).
fn serde_pretty_sorted(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut kv: Vec<_> = m.iter().collect();
                kv.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    sorted(v)
        .serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Every `\u` escape in `s` has four lowercase hex digits.
fn u_escapes_are_lowercase(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'u') {
                let hex = b.get(i + 2..i + 6).unwrap_or_default();
                if hex.len() != 4 || !hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                    return false;
                }
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    true
}

proptest! {
    #[test]
    fn canonical_json_is_ascii_and_parses_back_to_the_same_value(v in any_json()) {
        let text = python_json_dumps(&v);
        prop_assert!(text.is_ascii(), "{}", text);
        prop_assert!(!text.ends_with('\n'));
        prop_assert!(u_escapes_are_lowercase(&text), "{}", text);
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(python_json_dumps(&back), text);
    }

    #[test]
    fn canonical_json_has_python_layout(
        v in json_with("[\\x00-\\x7e]{0,10}".boxed(), integer()),
    ) {
        prop_assert_eq!(python_json_dumps(&v), serde_pretty_sorted(&v));
    }

    #[test]
    fn canonical_floats_are_python_repr(f in finite_float()) {
        let x = f.as_f64().unwrap();
        let text = python_json_dumps(&f);
        prop_assert_eq!(text.parse::<f64>().unwrap().to_bits(), x.to_bits(), "{}", text);
        // Python picks the shortest digits that round-trip, as Rust does.
        let rust = format!("{:e}", x.abs());
        let digits = |s: &str| s.split('e').next().unwrap().trim_start_matches(['-', '0', '.']).replace('.', "").trim_end_matches('0').len();
        let exp: i32 = rust.split('e').nth(1).unwrap().parse().unwrap();
        prop_assert_eq!(digits(&text).max(1), digits(&rust).max(1), "{} vs {}", text, rust);
        match text.split_once('e') {
            Some((mantissa, e)) => {
                prop_assert!(!(-4..16).contains(&exp), "{}", text);
                prop_assert!(e.starts_with(['+', '-']) && e.len() >= 3, "{}", text);
                prop_assert!(!mantissa.ends_with(".0"), "{}", text);
            }
            None => {
                prop_assert!((-4..16).contains(&exp), "{}", text);
                prop_assert!(text.contains('.'), "{}", text);
            }
        }
    }

    #[test]
    fn signed_messages_hold_exactly_the_signed_fields(auth in any_json()) {
        let mut auth = match auth {
            Value::Object(m) => m,
            other => Map::from_iter([("url".to_string(), other)]),
        };
        auth.insert("signature".into(), json!("s"));
        let url: Value = serde_json::from_str(&url_message(&auth)).unwrap();
        prop_assert_eq!(url, json!({"url": auth.get("url").cloned().unwrap_or(Value::Null)}));
        let legacy: Value = serde_json::from_str(&legacy_message(&auth)).unwrap();
        let legacy = legacy.as_object().unwrap();
        prop_assert_eq!(legacy.len(), 5);
        for (k, v) in legacy {
            prop_assert_eq!(v, auth.get(k).unwrap_or(&Value::Null));
        }
    }
}

// --- Workload rules -------------------------------------------------------------------

/// Formula text: its own alphabet, sometimes anything.
fn formula_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[ab0-9.+*/() -]{0,40}",
        "(clamp|min|max|sqrt)?[(ab0-9.,+*/ -]{0,30}[)]?",
        (0usize..20_000, 0usize..3).prop_map(|(n, shape)| match shape {
            0 => format!("{}a{}", "(".repeat(n), ")".repeat(n)),
            1 => format!("{}1", "-".repeat(n)),
            _ => format!("1{}", "+a".repeat(n)),
        }),
    ]
}

/// Formulas that parse: numbers and the variables `a`, `b` under `+ - * /`, unary minus,
/// `clamp`, `min` and `max`.
fn formula() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        (0.0..1e6f64).prop_map(|n| n.to_string()),
        Just("0".to_string()),
    ];
    leaf.prop_recursive(6, 32, 2, |inner| {
        prop_oneof![
            (inner.clone(), "[-+*/]", inner.clone())
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("-{a}")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(x, lo, hi)| format!("clamp({x}, {lo}, {hi})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("max(a, min({a}, {b}))")),
        ]
    })
}

/// Numbers a payload may hold where a rule looks: any JSON number, numeric strings of every
/// kind (`NaN`, `inf`, `1e400`, negative), and non-numbers.
fn payload_number() -> BoxedStrategy<Value> {
    prop_oneof![
        integer(),
        finite_float(),
        "[ +-]?([0-9]{0,25}(\\.[0-9]{0,4})?([eE][+-]?[0-9]{1,3})?|NaN|inf|infinity)[ ]?"
            .prop_map(Value::String),
    ]
    .boxed()
}

/// Payloads in which rules often find what they look for.
fn payload() -> impl Strategy<Value = Value> {
    json_with(
        prop::sample::select(vec!["a", "b", "max_tokens", "0", "1", "usage", ""])
            .prop_map(str::to_string)
            .boxed(),
        payload_number(),
    )
}

fn json_path() -> impl Strategy<Value = JsonPath> {
    prop::collection::vec("a|b|max_tokens|0|1|usage", 1..4)
        .prop_map(|p| JsonPath::parse(&p.join(".")).unwrap())
}

/// Variable bindings: a path read as a number, characters, pixels or a count, with or
/// without a default.
fn var() -> impl Strategy<Value = Var> {
    (
        json_path(),
        "|chars|pixels|count",
        prop::option::of(-1e6..1e6f64),
    )
        .prop_map(|(path, measure, default)| {
            let source = match measure.as_str() {
                "" => path.to_string(),
                m => format!("{m}({path})"),
            };
            let text = match default {
                Some(d) => format!("{source} or {d}"),
                None => source,
            };
            Var::parse(&text).unwrap()
        })
}

fn request_rule() -> impl Strategy<Value = RequestRule> {
    prop_oneof![
        any::<f64>().prop_map(RequestRule::Constant),
        json_path().prop_map(RequestRule::Path),
        (
            formula().prop_map(|f| Expr::parse(&f).unwrap()),
            var(),
            var()
        )
            .prop_map(|(expr, a, b)| RequestRule::Formula {
                expr,
                vars: [("a".to_string(), a), ("b".to_string(), b)].into(),
            }),
    ]
}

proptest! {
    #[test]
    fn formulas_parse_or_fail_cleanly(src in formula_text(), vals in (any::<f64>(), any::<f64>())) {
        if let Ok(e) = Expr::parse(&src) {
            let mut vars = Vec::new();
            e.vars(&mut vars);
            let _ = e.eval(&|v| if v == "a" { Ok(vals.0) } else { Ok(vals.1) });
        }
    }

    #[test]
    fn json_paths_parse_or_fail_cleanly_and_print_back(
        src in ".{0,24}",
        segments in prop::collection::vec("[^.\\s]{1,8}", 1..5),
        v in any_json(),
    ) {
        if let Ok(p) = JsonPath::parse(&src) {
            let _ = (p.get(&v), p.number(&v));
        }
        let text = segments.join(".");
        let p = JsonPath::parse(&text).unwrap();
        prop_assert_eq!(p.to_string(), text);
    }

    #[test]
    fn workload_is_positive_and_finite_or_none(
        rule in request_rule(),
        response in prop::option::of(json_path()),
        body in payload(),
        answer in prop::option::of(payload()),
        body_bytes in any::<u64>(),
    ) {
        let ok = |w: Option<f64>| w.is_none_or(|w| w.is_finite() && w > 0.0);
        prop_assert!(ok(rule.eval(&body)));
        let input = vespa::profile::workload::Input { json: Some(&body), body_bytes: Some(body_bytes) };
        if let Ok(w) = rule.evaluate(&input) {
            prop_assert!(w.is_finite() && w >= 0.0, "{:?}", w);
        }
        let rule = WorkloadRule { request: Some(rule), response };
        prop_assert!(ok(rule.measured(&body, answer.as_ref())));
    }

    #[test]
    fn built_in_profiles_count_any_body_as_positive_finite_or_none(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            payload().prop_map(|v| v.to_string().into_bytes()),
            (payload_number(), payload_number()).prop_map(|(a, b)| json!({"max_tokens": a,
                "input": {"workflow_json": {"5": {"inputs": {"width": a, "height": b}},
                                            "3": {"inputs": {"steps": b}}}}}).to_string().into_bytes()),
            (payload_number(), payload(), "[0-9xX ]{0,12}|auto").prop_map(|(n, input, size)| json!({
                "n": n, "max_completion_tokens": n, "input": input, "query": input,
                "documents": [input], "size": size}).to_string().into_bytes()),
        ],
        path in prop_oneof![
            prop::sample::select(vec!["/v1/completions", "/v1/chat/completions", "/v1/embeddings",
                "/v1/rerank", "/v1/images/generations", "/v1/audio/transcriptions",
                "/v1/audio/speech", "/generate", "/runsync"]).prop_map(str::to_string),
            "/[a-z/]{0,12}",
        ],
        in_memory in any::<bool>(),
        body_bytes in prop::option::of(any::<u64>()),
    ) {
        let view = RequestView {
            path: &path,
            body: in_memory.then_some(&body[..]),
            body_bytes,
        };
        for (name, _) in BUILT_IN {
            let w = Profile::built_in(name).unwrap().request_workload(&view);
            prop_assert!(
                w.clone().is_ok_and(|w| w.is_none_or(|w| w.is_finite() && w > 0.0)) || w.is_err(),
                "{}: {:?}", name, w
            );
        }
    }
}

// --- Templates and profiles ------------------------------------------------------------

fn ctx() -> RenderContext {
    RenderContext { model: "m".into() }
}

/// A string with generators in it, well-formed or not.
fn template_text() -> impl Strategy<Value = String> {
    let generator = prop_oneof![
        Just("{{model}}".to_string()),
        Just("{{system_prompt}}".to_string()),
        (0u64..50).prop_map(|n| format!("{{{{words {n}}}}}")),
        any::<u64>().prop_map(|n| format!("{{{{ words {n} }}}}")),
        (any::<i64>(), any::<i64>()).prop_map(|(a, b)| format!("{{{{int {a} {b}}}}}")),
        "\\{\\{[a-z0-9 -]{0,12}(\\}\\})?",
        "[^{}]{0,8}",
    ];
    prop::collection::vec(generator, 0..4).prop_map(|g| g.concat())
}

proptest! {
    #[test]
    fn templates_compile_or_fail_cleanly_and_render(s in template_text(), any_text in ".{0,24}") {
        for s in [s, any_text] {
            if let Ok(t) = Template::compile(&json!({"k": [s]})) {
                let _ = t.render(&ctx());
            }
        }
    }

    #[test]
    fn int_generators_render_within_their_bounds(a in any::<i64>(), b in any::<i64>(), text in any::<bool>()) {
        let (lo, hi) = (a.min(b), a.max(b));
        let src = if text { format!("x{{{{int {lo} {hi}}}}}") } else { format!("{{{{int {lo} {hi}}}}}") };
        let rendered = Template::compile(&json!(src)).unwrap().render(&ctx());
        let n: i64 = match &rendered {
            Value::String(s) => s[1..].parse().unwrap(),
            other => other.as_i64().unwrap(),
        };
        prop_assert!((lo..=hi).contains(&n), "{} not in {}..={}", n, lo, hi);
    }
}

/// A TOML value for a profile key: sometimes right, often wrong in type or range.
fn wild(right: BoxedStrategy<toml::Value>) -> BoxedStrategy<toml::Value> {
    prop_oneof![
        12 => right,
        1 => any::<f64>().prop_map(toml::Value::Float),
        1 => any::<i64>().prop_map(toml::Value::Integer),
        1 => ".{0,12}".prop_map(toml::Value::String),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
    ]
    .boxed()
}

fn string(re: &'static str) -> BoxedStrategy<toml::Value> {
    re.prop_map(toml::Value::String).boxed()
}

/// A TOML table of `keys`, each present or not.
fn table(keys: Vec<(&'static str, BoxedStrategy<toml::Value>)>) -> BoxedStrategy<toml::Table> {
    let (names, values): (Vec<_>, Vec<_>) = keys
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                prop::option::weighted(if k == "bogus" { 0.05 } else { 0.9 }, v),
            )
        })
        .unzip();
    values
        .prop_map(move |vs| {
            names
                .iter()
                .zip(vs)
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect()
        })
        .boxed()
}

fn toml_body() -> BoxedStrategy<toml::Value> {
    let leaf = prop_oneof![
        template_text().prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Profile text: valid often enough to reach every check, wrong in every field.
fn profile_text() -> impl Strategy<Value = String> {
    let path = || wild(string("/[a-z0-9._/]{0,12}|[a-z./]{0,6}"));
    let count = || {
        wild(
            prop_oneof![(1i64..1000), Just(0), Just(u32::MAX as i64 + 1)]
                .prop_map(toml::Value::Integer)
                .boxed(),
        )
    };
    let request = table(vec![
        ("method", wild(string("GET|POST|put|[A-Z ]{0,6}"))),
        ("path", path()),
        (
            "timeout",
            wild(
                prop_oneof![
                    0.001..10_000.0f64,
                    Just(1e300),
                    Just(-1.0),
                    Just(f64::NAN),
                    Just(f64::INFINITY)
                ]
                .prop_map(toml::Value::Float)
                .boxed(),
            ),
        ),
        ("body", toml_body()),
    ]);
    let vars = prop::collection::btree_map(
        "a|b|c|body_bytes",
        string("[a-z0-9._]{0,10}|(chars|pixels|count|len)\\([a-z.]{0,6}\\)?( or [0-9a-z.-]{0,4})?"),
        0..3,
    )
    .prop_map(|m| toml::Value::Table(m.into_iter().collect()))
    .boxed();
    let workload = table(vec![
        ("request", wild(string("[a-z0-9._]{0,10}"))),
        (
            "formula",
            wild(formula_text().prop_map(toml::Value::String).boxed()),
        ),
        ("vars", vars),
        (
            "constant",
            wild(any::<f64>().prop_map(toml::Value::Float).boxed()),
        ),
        ("response", wild(string("[a-z0-9._]{0,10}"))),
    ]);
    let benchmark = table(vec![
        (
            "warmup",
            wild(any::<bool>().prop_map(toml::Value::Boolean).boxed()),
        ),
        ("mode", wild(string("ramp|rounds|[a-z]{0,5}"))),
        ("concurrency", count()),
        ("max_concurrency", count()),
        ("runs", count()),
    ]);
    let routes = prop::collection::btree_map(
        "/[a-z0-9/*?]{0,8}|[a-z]{0,3}",
        workload.clone().prop_map(toml::Value::Table),
        0..3,
    )
    .prop_map(|m| toml::Value::Table(m.into_iter().collect()))
    .boxed();
    let top = table(vec![
        ("name", wild(string("[a-z-]{0,8}"))),
        ("description", wild(string(".{0,12}"))),
        ("health", path()),
        ("request", request.prop_map(toml::Value::Table).boxed()),
        ("workload", workload.prop_map(toml::Value::Table).boxed()),
        ("benchmark", benchmark.prop_map(toml::Value::Table).boxed()),
        ("routes", wild(routes)),
        ("bogus", any::<i64>().prop_map(toml::Value::Integer).boxed()),
    ]);
    top.prop_map(|t| toml::to_string(&t).unwrap())
}

/// Line soup: fragments of profile TOML in any order.
fn profile_soup() -> impl Strategy<Value = String> {
    let line = prop::sample::select(vec![
        "name = \"x\"",
        "[request]",
        "path = \"/a\"",
        "method = \"GET\"",
        "timeout = 1e300",
        "timeout = nan",
        "[request.body]",
        "p = \"{{int -9223372036854775808 9223372036854775807}}\"",
        "q = \"{{words 18446744073709551615}}\"",
        "r = \"{{\"",
        "[workload]",
        "request = \"a..b\"",
        "response = \"usage.completion_tokens\"",
        "formula = \"a * (b\"",
        "formula = \"a / 0\"",
        "constant = -1",
        "constant = inf",
        "[workload.vars]",
        "a = \"x.0\"",
        "[routes.\"/b\"]",
        "[routes.\"/a\"]",
        "[routes.\"/v1/*\"]",
        "formula = \"500 * clamp(body_bytes / a, 0.1, 8)\"",
        "vars = { a = \"chars(x) or 1\" }",
        "[routes.\"/b\".vars]",
        "[benchmark]",
        "concurrency = -5",
        "runs = 0",
        "mode = \"rounds\"",
        "[[request]]",
        "\u{1F600} = \u{0}",
    ]);
    prop::collection::vec(line, 0..16).prop_map(|l| l.join("\n"))
}

/// What a parsed profile must do without panicking.
fn use_profile(p: &Profile, body: &[u8]) -> Result<(), TestCaseError> {
    if let Some(t) = &p.request.body {
        let rendered = t.render(&ctx());
        let w = p.workload.measured(&rendered, None);
        prop_assert!(w.is_none_or(|w| w.is_finite() && w > 0.0));
    }
    for path in [p.request.path.as_str(), "/other"] {
        let view = RequestView {
            path,
            body: Some(body),
            body_bytes: Some(body.len() as u64),
        };
        if let Ok(w) = p.request_workload(&view) {
            prop_assert!(w.is_none_or(|w| w.is_finite() && w > 0.0));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn profile_text_parses_or_fails_with_a_line_in_the_file(
        text in prop_oneof![".{0,64}", profile_text(), profile_soup()],
        body in payload(),
    ) {
        match Profile::parse(&text, "p.toml") {
            Ok(p) => use_profile(&p, body.to_string().as_bytes())?,
            Err(e) => {
                let lines = text.lines().count().max(1);
                prop_assert!(e.line.is_none_or(|l| (1..=lines + 1).contains(&l)), "{} in {:?}", e, text);
                prop_assert!(e.to_string().starts_with("p.toml:"), "{}", e);
            }
        }
    }

    #[test]
    fn generated_valid_profiles_parse_to_what_they_say(
        name in "[a-z][a-z0-9-]{0,12}",
        method in "GET|POST|PUT|get|post",
        path in "/[a-z0-9/._-]{0,16}",
        timeout in prop_oneof![0.001..86_400.0f64, 1e8..1e12f64],
        n in (1u32..1000, 1u32..1000, 1u32..100),
        rounds in any::<bool>(),
        rule in 0usize..3,
        request in json_path(),
        constant in 1e-6..1e12f64,
    ) {
        let workload = match rule {
            0 => format!("request = \"{request}\""),
            1 => format!("constant = {constant:?}"),
            _ => format!("formula = \"a * b / 1000\"\n[workload.vars]\na = \"{request}\"\nb = \"b\""),
        };
        let mode = if rounds { "rounds" } else { "ramp" };
        let text = format!(
            "name = \"{name}\"\n[request]\nmethod = \"{method}\"\npath = \"{path}\"\ntimeout = {timeout:?}\n\
             [request.body]\nmodel = \"{{{{model}}}}\"\nmax_tokens = \"{{{{int 1 9}}}}\"\n\
             [benchmark]\nmode = \"{mode}\"\nconcurrency = {}\nmax_concurrency = {}\nruns = {}\n\
             [workload]\n{workload}\n",
            n.0, n.1, n.2,
        );
        if timeout > MAX_SECS {
            let e = Profile::parse(&text, "p.toml").unwrap_err();
            prop_assert!(e.message.contains("request.timeout"), "{}", e);
            return Ok(());
        }
        let p = Profile::parse(&text, "p.toml").unwrap();
        prop_assert_eq!(&p.name, &name);
        prop_assert_eq!(p.request.method.as_str(), method.to_ascii_uppercase());
        prop_assert_eq!(&p.request.path, &path);
        prop_assert_eq!(p.request.timeout, std::time::Duration::from_secs_f64(timeout));
        prop_assert_eq!(p.benchmark.concurrency, n.0 as usize);
        prop_assert_eq!(p.benchmark.max_concurrency, n.0.max(n.1) as usize);
        prop_assert_eq!(p.benchmark.runs, n.2 as usize);
        let body = p.request.body.as_ref().unwrap().render(&ctx());
        prop_assert_eq!(&body["model"], "m");
        let want = match rule {
            0 => RequestRule::Path(request),
            1 => RequestRule::Constant(constant),
            _ => RequestRule::Formula {
                expr: Expr::parse("a * b / 1000").unwrap(),
                vars: [
                    ("a".to_string(), Var::number(request)),
                    ("b".to_string(), Var::number(JsonPath::parse("b").unwrap())),
                ].into(),
            },
        };
        prop_assert_eq!(p.workload, WorkloadRule { request: Some(want), response: None });
    }
}

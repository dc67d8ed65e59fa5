//! Request body templates: JSON with generators inside strings.
//!
//! A benchmark sends many requests; if they were identical, a prefix cache would answer
//! them for free and the benchmark would over-measure. Strings may therefore hold
//! generators: `{{words 250}}` (random words), `{{system_prompt}}` (a fixed text, shared
//! by every request as real system prompts are), `{{model}}` (`MODEL_NAME`) and
//! `{{int A B}}` (a random integer; a string that is only this becomes a JSON number).
//! `N` is at most [`MAX_WORDS`].

use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared system prompt of the built-in LLM profiles.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant. Answer the user's request \
thoroughly and accurately. Zebras are African equines with distinctive black-and-white \
striped coats; each animal's stripes are unique, and scientists still debate whether they \
deter flies, help with heat, or confuse predators.";

const WORDS: &[&str] = &[
    "river",
    "mountain",
    "lantern",
    "quiet",
    "orbit",
    "copper",
    "meadow",
    "signal",
    "harbor",
    "violet",
    "engine",
    "thunder",
    "pocket",
    "garden",
    "silver",
    "ladder",
    "island",
    "mirror",
    "planet",
    "forest",
    "candle",
    "window",
    "bridge",
    "ember",
    "falcon",
    "glacier",
    "horizon",
    "ivory",
    "jungle",
    "kettle",
    "lemon",
    "marble",
    "needle",
    "ocean",
    "pepper",
    "quartz",
    "rocket",
    "saddle",
    "tunnel",
    "umbrella",
    "valley",
    "walnut",
    "yellow",
    "zephyr",
    "anchor",
    "basket",
    "cactus",
    "dragon",
    "eclipse",
    "feather",
    "granite",
    "helmet",
    "insect",
    "jacket",
    "kitten",
    "library",
    "magnet",
    "nectar",
    "oyster",
    "puzzle",
    "rabbit",
    "shadow",
    "timber",
    "utensil",
    "velvet",
    "whistle",
    "yogurt",
    "zipper",
    "arrow",
    "bubble",
    "circus",
    "desert",
    "engineer",
    "fossil",
    "guitar",
    "hammock",
    "igloo",
    "jigsaw",
    "koala",
    "lagoon",
    "meteor",
    "nugget",
    "octave",
    "parrot",
    "quiver",
    "ribbon",
    "sphinx",
    "trumpet",
    "unicorn",
    "voyage",
    "wizard",
    "xylophone",
    "yacht",
    "zenith",
    "blossom",
    "compass",
    "dolphin",
    "echo",
    "firefly",
    "galaxy",
];

/// Most words one `{{words N}}` may ask for: more than any model's context, and few enough
/// that rendering cannot exhaust memory.
pub const MAX_WORDS: usize = 1_000_000;

/// One piece of a templated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// `{{model}}`.
    Model,
    /// `{{system_prompt}}`.
    SystemPrompt,
    /// `{{words N}}`.
    Words(usize),
    /// `{{int A B}}`.
    Int(i64, i64),
}

/// A compiled body template.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A JSON value with no generators.
    Literal(Value),
    /// A string with generators.
    Text(Vec<Part>),
    /// A string that is exactly one `{{int A B}}`: rendered as a number.
    Number(i64, i64),
    /// An object of templates.
    Object(Vec<(String, Template)>),
    /// An array of templates.
    Array(Vec<Template>),
}

/// What a render needs from outside.
#[derive(Debug, Clone)]
pub struct RenderContext {
    /// `{{model}}`.
    pub model: String,
}

impl Template {
    /// Compiles `value`; errors name the generator that is not known.
    pub fn compile(value: &Value) -> Result<Template, String> {
        Ok(match value {
            Value::String(s) => compile_str(s)?,
            Value::Object(o) => {
                let items = o
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Template::compile(v)?)));
                Template::Object(items.collect::<Result<_, String>>()?)
            }
            Value::Array(a) => {
                Template::Array(a.iter().map(Template::compile).collect::<Result<_, _>>()?)
            }
            other => Template::Literal(other.clone()),
        })
    }

    /// Whether every render gives the same value (no generators).
    pub fn is_static(&self) -> bool {
        match self {
            Template::Literal(_) => true,
            Template::Text(_) | Template::Number(..) => false,
            Template::Object(items) => items.iter().all(|(_, t)| t.is_static()),
            Template::Array(items) => items.iter().all(Template::is_static),
        }
    }

    /// A fresh JSON value.
    pub fn render(&self, ctx: &RenderContext) -> Value {
        match self {
            Template::Literal(v) => v.clone(),
            Template::Number(a, b) => Value::from(rand_range(*a, *b)),
            Template::Text(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => s.push_str(t),
                        Part::Model => s.push_str(&ctx.model),
                        Part::SystemPrompt => s.push_str(SYSTEM_PROMPT),
                        Part::Words(n) => push_words(&mut s, *n),
                        Part::Int(a, b) => s.push_str(&rand_range(*a, *b).to_string()),
                    }
                }
                Value::String(s)
            }
            Template::Object(items) => Value::Object(
                items
                    .iter()
                    .map(|(k, t)| (k.clone(), t.render(ctx)))
                    .collect::<Map<_, _>>(),
            ),
            Template::Array(items) => Value::Array(items.iter().map(|t| t.render(ctx)).collect()),
        }
    }
}

fn compile_str(s: &str) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {s:?}"))?;
        parts.push(generator(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(match parts.as_slice() {
        [] => Template::Literal(Value::String(String::new())),
        [Part::Text(t)] => Template::Literal(Value::String(t.clone())),
        [Part::Int(a, b)] => Template::Number(*a, *b),
        _ => Template::Text(parts),
    })
}

fn generator(spec: &str) -> Result<Part, String> {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let bad = || {
        format!("unknown generator {{{{{spec}}}}} (known: model, system_prompt, words N, int A B)")
    };
    match words.as_slice() {
        ["model"] => Ok(Part::Model),
        ["system_prompt"] => Ok(Part::SystemPrompt),
        ["words", n] => match n.parse() {
            Ok(n) if n <= MAX_WORDS => Ok(Part::Words(n)),
            _ => Err(bad()),
        },
        ["int", a, b] => match (a.parse::<i64>(), b.parse::<i64>()) {
            (Ok(a), Ok(b)) if a <= b => Ok(Part::Int(a, b)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

static SEED: AtomicU64 = AtomicU64::new(0);

/// splitmix64 over a global counter seeded from the clock: cheap, thread-safe, and good
/// enough to make prompts differ.
fn next_random() -> u64 {
    if SEED.load(Ordering::Relaxed) == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let _ = SEED.compare_exchange(0, t | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut z = SEED
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rand_range(a: i64, b: i64) -> i64 {
    // Internal: in i128, so `{{int i64::MIN i64::MAX}}` neither overflows nor divides by 0.
    let span = (i128::from(b) - i128::from(a) + 1) as u128;
    (i128::from(a) + (u128::from(next_random()) % span) as i128) as i64
}

fn push_words(s: &mut String, n: usize) {
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[(next_random() % WORDS.len() as u64) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> RenderContext {
        RenderContext { model: "m".into() }
    }

    #[test]
    fn generators_render_fresh_values() {
        let t = Template::compile(&json!({"model": "{{model}}", "prompt": "{{system_prompt}}\n\n{{words 250}}",
                                          "seed": "{{int 1 1000000}}", "n": 5, "tags": ["x{{int 1 9}}"]}))
        .unwrap();
        let a = t.render(&ctx());
        let b = t.render(&ctx());
        assert_eq!(a["model"], "m");
        assert_eq!(a["n"], 5);
        assert!(a["seed"].is_i64());
        let prompt = a["prompt"].as_str().unwrap();
        assert!(prompt.starts_with(SYSTEM_PROMPT));
        assert_eq!(prompt[SYSTEM_PROMPT.len() + 2..].split(' ').count(), 250);
        assert_ne!(a["prompt"], b["prompt"], "prompts differ between requests");
        assert!(a["tags"][0].as_str().unwrap().starts_with('x'));
    }

    #[test]
    fn int_generators_take_the_full_i64_range() {
        let t = Template::compile(&json!(format!("{{{{int {} {}}}}}", i64::MIN, i64::MAX)));
        assert!(t.unwrap().render(&ctx()).is_i64());
        let t = Template::compile(&json!(format!("{{{{int {0} {0}}}}}", i64::MAX)));
        assert_eq!(t.unwrap().render(&ctx()), json!(i64::MAX));
    }

    #[test]
    fn only_templates_without_generators_are_static() {
        assert!(
            Template::compile(&json!({"a": [1, "x"], "b": {"c": null}}))
                .unwrap()
                .is_static()
        );
        assert!(
            !Template::compile(&json!({"a": ["{{words 2}}"]}))
                .unwrap()
                .is_static()
        );
        assert!(
            !Template::compile(&json!({"seed": "{{int 1 2}}"}))
                .unwrap()
                .is_static()
        );
    }

    #[test]
    fn unknown_or_malformed_generators_are_errors() {
        for bad in [
            "{{nope}}",
            "{{words many}}",
            "{{int 5 1}}",
            "{{words 3",
            "{{words 1000001}}",
        ] {
            assert!(Template::compile(&json!(bad)).is_err(), "{bad}");
        }
    }
}

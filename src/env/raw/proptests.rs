//! Property tests for the setting value parsers: any value is parsed or rejected with a
//! [`ConfigError`], never a panic, and a value written the documented way reads back.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's own variable), default 256;
//! `scripts/fuzz.sh` runs many more.

use super::*;
use proptest::prelude::*;

fn raw(v: &str) -> Raw {
    Raw {
        value: v.into(),
        origin: "X".into(),
        source: Source::Env,
    }
}

/// Setting values: anything, plus numbers of every size and spelling.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        any::<f64>().prop_map(|f| f.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        any::<u64>().prop_map(|n| n.to_string()),
        "[ +-]?[0-9]{0,30}(\\.[0-9]{0,6})?([eE][+-]?[0-9]{1,4})? ?([kKmMgG]i?[bB]?|none|inf|NaN)?",
    ]
}

/// `s` with random letter case and surrounding blanks.
fn respell(s: &str) -> impl Strategy<Value = String> + use<> {
    let s = s.to_string();
    (
        prop::collection::vec(any::<bool>(), s.len()),
        "[ \t]{0,2}",
        "[ \t]{0,2}",
    )
        .prop_map(move |(upper, pre, post)| {
            let body: String = s
                .chars()
                .zip(upper)
                .map(|(c, u)| {
                    if u {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect();
            format!("{pre}{body}{post}")
        })
}

const UNITS: [(&str, u64); 11] = [
    ("", 1),
    ("b", 1),
    ("k", 1000),
    ("kb", 1000),
    ("m", 1_000_000),
    ("mb", 1_000_000),
    ("g", 1_000_000_000),
    ("gb", 1_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
];

proptest! {
    #[test]
    fn any_value_is_parsed_or_rejected_cleanly(v in value()) {
        let r = raw(&v);
        let _ = r.bool();
        if let Ok(f) = r.f64_min(0.0) {
            prop_assert!(f.is_finite() && f >= 0.0);
        }
        if let Ok(n) = r.u64_min(1) {
            prop_assert!(n >= 1);
        }
        let _ = r.secs();
        let _ = r.optional_secs();
        if let Ok(n) = r.bytes() {
            prop_assert!(n > 0);
        }
    }

    #[test]
    fn bools_read_back_in_any_spelling(
        (b, spelled) in (0..6usize, any::<bool>()).prop_flat_map(|(i, b)| {
            let word = if b {
                ["y", "yes", "t", "true", "on", "1"][i]
            } else {
                ["n", "no", "f", "false", "off", "0"][i]
            };
            (Just(b), respell(word))
        }),
    ) {
        prop_assert_eq!(parse_bool(&spelled), Some(b));
        prop_assert_eq!(raw(&spelled).bool(), Ok(b));
    }

    #[test]
    fn sizes_read_back_or_report_overflow(
        n in prop_oneof![any::<u64>(), 0..100_000u64, Just(u64::MAX)],
        (unit, mult, spelled) in prop::sample::select(UNITS.to_vec())
            .prop_flat_map(|(u, m)| (Just(u), Just(m), respell(u))),
        gap in "[ ]{0,1}",
    ) {
        let _ = unit;
        let text = format!("{n}{gap}{}", spelled.trim());
        match n.checked_mul(mult).filter(|v| *v > 0) {
            Some(want) => prop_assert_eq!(raw(&text).bytes(), Ok(want)),
            None => prop_assert!(raw(&text).bytes().is_err()),
        }
    }

    #[test]
    fn seconds_read_back(
        secs in prop_oneof![0.0..1e6f64, 0.0..1.0f64, Just(0.0), Just(MAX_SECS), 1e6..MAX_SECS],
        scientific in any::<bool>(),
        too_long in prop_oneof![Just(f64::MAX), MAX_SECS * (1.0 + 1e-12)..f64::MAX],
    ) {
        for text in [too_long.to_string(), format!("{too_long:e}")] {
            prop_assert!(raw(&text).secs().is_err());
            prop_assert!(raw(&text).optional_secs().is_err());
        }
        let text = if scientific { format!("{secs:e}") } else { secs.to_string() };
        let want = Duration::from_secs_f64(secs);
        prop_assert_eq!(raw(&text).secs(), Ok(want));
        prop_assert_eq!(raw(&text).optional_secs(), Ok((secs > 0.0).then_some(want)));
        prop_assert_eq!(raw(&text).f64_min(0.0), Ok(secs));
    }

    #[test]
    fn whole_numbers_read_back(n in any::<u64>(), min in any::<u64>()) {
        let got = raw(&format!(" {n} ")).u64_min(min);
        if n >= min {
            prop_assert_eq!(got, Ok(n));
        } else {
            prop_assert!(got.is_err());
        }
    }
}

//! One raw setting value and its parsers, each returning a [`ConfigError`] naming the
//! setting.

use super::ConfigError;
use std::time::Duration;

/// The longest duration a setting may give, seconds (about 31 years): far beyond any real
/// timeout, and small enough that adding it to an `Instant` cannot overflow.
pub const MAX_SECS: f64 = 1e9;

/// The prefix of the alias every environment variable also answers to.
pub const PYWORKER_PREFIX: &str = "PYWORKER_";

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Its flag.
    Flag,
    /// Its environment variable.
    Env,
    /// Neither was given: the declared default.
    Default,
}

/// One raw setting: its value and where it came from (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub value: String,
    /// The flag (`--max-perf`) or variable (`MAX_PERF`) named by errors.
    pub origin: String,
    pub source: Source,
}

/// Parses a boolean the way Python's `strtobool` does (PyWorker uses it for `UNSECURED`):
/// `y yes t true on 1` and `n no f false off 0`, case-insensitive.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Some(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

impl Raw {
    /// The value of flag `--{name}`, if given.
    pub(crate) fn flag(value: Option<&str>, name: &str) -> Option<Raw> {
        value.map(|v| Raw {
            value: v.to_string(),
            origin: format!("--{name}"),
            source: Source::Flag,
        })
    }

    /// The value of environment variable `var`, else of `PYWORKER_{var}` (the original
    /// flat design's spelling), if set and not empty: a shell's `export X=` usually means
    /// "not configured".
    pub(crate) fn env(env: &dyn super::Env, var: &str) -> Option<Raw> {
        let one = |name: String| {
            env.var(&name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| Raw {
                    value: v,
                    origin: name,
                    source: Source::Env,
                })
        };
        one(var.to_string()).or_else(|| one(format!("{PYWORKER_PREFIX}{var}")))
    }

    pub(crate) fn error(&self, problem: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(
            self.origin.clone(),
            format!("{problem} (got {:?})", self.value),
        )
    }

    pub(crate) fn bool(&self) -> Result<bool, ConfigError> {
        parse_bool(&self.value).ok_or_else(|| self.error("expected true or false"))
    }

    pub(crate) fn f64_min(&self, min: f64) -> Result<f64, ConfigError> {
        let v: f64 = self
            .value
            .trim()
            .parse()
            .map_err(|_| self.error("expected a number"))?;
        if !v.is_finite() || v < min {
            return Err(self.error(format!("expected a number >= {min}")));
        }
        Ok(v)
    }

    pub(crate) fn u64_min(&self, min: u64) -> Result<u64, ConfigError> {
        let v: u64 = self
            .value
            .trim()
            .parse()
            .map_err(|_| self.error("expected a whole number"))?;
        if v < min {
            return Err(self.error(format!("expected a whole number >= {min}")));
        }
        Ok(v)
    }

    /// Seconds as a positive number; `none` or `0` mean "no limit".
    pub(crate) fn optional_secs(&self) -> Result<Option<Duration>, ConfigError> {
        if self.value.trim().eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let v = self.f64_min(0.0)?;
        (v > 0.0).then(|| self.duration(v)).transpose()
    }

    /// Seconds as a number >= 0, at most [`MAX_SECS`].
    pub(crate) fn secs(&self) -> Result<Duration, ConfigError> {
        self.duration(self.f64_min(0.0)?)
    }

    fn duration(&self, secs: f64) -> Result<Duration, ConfigError> {
        if secs > MAX_SECS {
            return Err(self.error(format!("expected at most {MAX_SECS:e} seconds")));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// A byte size: a whole number with an optional `K`, `M`, `G` (1000) or `KiB`, `MiB`,
    /// `GiB` (1024) suffix.
    pub(crate) fn bytes(&self) -> Result<u64, ConfigError> {
        let s = self.value.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| self.error("expected a size in bytes, e.g. 67108864 or 64MiB"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return Err(self.error("unknown size unit (use K, M, G, KiB, MiB or GiB)")),
        };
        n.checked_mul(mult)
            .filter(|v| *v > 0)
            .ok_or_else(|| self.error("expected a size greater than zero"))
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: &str) -> Raw {
        Raw {
            value: v.into(),
            origin: "X".into(),
            source: Source::Env,
        }
    }

    #[test]
    fn bools_follow_python_strtobool() {
        for t in ["1", "true", "TRUE", "yes", "on", "t", "y"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "false", "False", "no", "off", "f", "n"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!(raw("64MiB").bytes().unwrap(), 64 << 20);
        assert_eq!(raw("1000").bytes().unwrap(), 1000);
        assert_eq!(raw("2K").bytes().unwrap(), 2000);
        assert!(raw("0").bytes().is_err());
        assert!(raw("12 parsecs").bytes().is_err());
    }

    #[test]
    fn errors_name_the_setting_and_value() {
        let e = raw("abc").f64_min(0.0).unwrap_err();
        assert_eq!(e.setting, "X");
        assert!(e.to_string().contains("\"abc\""), "{e}");
    }

    #[test]
    fn huge_seconds_are_an_error_not_a_panic() {
        assert!(raw("1e30").secs().is_err());
        assert!(raw("1e30").optional_secs().is_err());
    }

    #[test]
    fn optional_seconds_accept_none_and_zero() {
        assert_eq!(raw("none").optional_secs().unwrap(), None);
        assert_eq!(raw("0").optional_secs().unwrap(), None);
        assert_eq!(
            raw("1.5").optional_secs().unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(raw("-1").optional_secs().is_err());
        // Beyond MAX_SECS (a Duration would overflow at ~1.8e19) is an error, not a panic.
        assert!(raw("1e300").secs().is_err());
        assert!(raw("1e10").optional_secs().is_err());
        assert_eq!(
            raw("1e9").secs().unwrap(),
            Duration::from_secs(1_000_000_000)
        );
    }
}

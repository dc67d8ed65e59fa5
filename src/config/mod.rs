//! Configuration: command-line flags and PyWorker's environment variables, validated once.
//!
//! Every setting can be given as a flag or as the environment variable PyWorker uses; a flag
//! wins over the environment. The environment is read through [`Env`] so tests never touch
//! the real process environment. Invalid configuration is a [`ConfigError`] that names the
//! variable; the binary turns it into exit code 64 (`EX_USAGE`) before any port is bound.

mod parse;
mod worker;

pub use parse::parse_bool;
pub use worker::{Benchmark, WorkerArgs, WorkerConfig};

use std::collections::HashMap;

/// Exit code for invalid configuration (`EX_USAGE` from `sysexits.h`).
pub const EXIT_CONFIG: i32 = 64;

/// A source of environment variables.
pub trait Env {
    /// The value of `name`, or `None` when it is unset.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

/// A setting that could not be used. The message names the variable (or flag) it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {setting}: {problem}")]
pub struct ConfigError {
    /// The environment variable or flag the bad value came from, e.g. `MAX_PERF`.
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

/// One raw setting: its value and where it came from (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub value: String,
    pub origin: String,
}

/// Looks up a setting: the flag first, then the environment variable. Empty environment
/// values count as unset, as a shell `export X=` usually means "not configured".
pub(crate) fn lookup(
    flag: &Option<String>,
    flag_name: &str,
    env: &dyn Env,
    var: &str,
) -> Option<Raw> {
    if let Some(v) = flag {
        return Some(Raw {
            value: v.clone(),
            origin: format!("--{flag_name}"),
        });
    }
    env.var(var).filter(|v| !v.trim().is_empty()).map(|v| Raw {
        value: v,
        origin: var.to_string(),
    })
}

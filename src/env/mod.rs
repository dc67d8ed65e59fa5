//! Settings from flags and environment variables, shared by every command.
//!
//! A setting can be given as a flag or, where it has one, as an environment variable (the
//! names PyWorker uses); a flag wins over the environment. Each setting is declared once with
//! `settings!`: its flag, environment name, default and help, from which come both the
//! clap arguments (so `--help` cannot drift from the code) and the value the loader reads.
//!
//! The environment is read through [`Env`] so tests never touch the real process
//! environment. Invalid configuration is a [`ConfigError`] that names the variable or flag;
//! the binary turns it into exit code 64 ([`EXIT_CONFIG`]) before any port is bound.

mod raw;
mod setting;

pub use raw::{MAX_SECS, PYWORKER_PREFIX, parse_bool};
pub(crate) use raw::{Raw, Source};
pub(crate) use setting::settings;
pub use setting::{Arg, Defaulted, Optional, Setting};

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

/// An empty environment: only flags and declared defaults apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
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

    /// Prints `vespa: <error>` to stderr, as every command does, and returns
    /// [`EXIT_CONFIG`] for the process to exit with.
    pub fn eprint(&self) -> i32 {
        eprintln!("vespa: {self}");
        EXIT_CONFIG
    }
}

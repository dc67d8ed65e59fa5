//! One declaration per setting: `settings!` and the table it builds.

use super::{Env, Raw, Source};
use std::marker::PhantomData;

/// The declaration of one setting, as written once in a `settings!` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The flag, without its leading `--`, e.g. `max-wait-time`.
    pub flag: &'static str,
    /// The environment variable, e.g. `MAX_WAIT_TIME`; `None` for a flag-only setting. A name
    /// with a `<…>` part (`VAST_TCP_PORT_<WORKER_PORT>`) is completed by the loader.
    pub env: Option<&'static str>,
    /// The value used when neither the flag nor the variable is given; `None` when "not set"
    /// is a state of its own (no limit, not reporting, computed from other settings).
    pub default: Option<&'static str>,
    /// What `--help` shows as the default: the default value, or what "not set" means.
    pub default_help: &'static str,
    /// The help text, as the lines of the declaration's doc comment.
    pub doc: &'static [&'static str],
}

impl Setting {
    /// The help text on one line.
    pub fn help(&self) -> String {
        let lines: Vec<&str> = self.doc.iter().map(|l| l.trim()).collect();
        lines.join(" ")
    }

    /// The text `--help` shows: the help, the environment name and the default (none when
    /// `default_help` is empty).
    pub fn help_line(&self) -> String {
        let mut line = self.help();
        if let Some(var) = self.env {
            line.push_str(&format!(" [env: {var}]"));
        }
        if !self.default_help.is_empty() {
            line.push_str(&format!(" [default: {}]", self.default_help));
        }
        line
    }

    /// The name errors give for this setting when it was not given: its variable, else its
    /// flag.
    fn origin(&self) -> String {
        match self.env {
            Some(var) => var.to_string(),
            None => format!("--{}", self.flag),
        }
    }
}

/// Marks a setting declared with `default "…"`: it always has a value.
#[derive(Debug)]
pub enum Defaulted {}

/// Marks a setting declared with `unset "…"`: it may have no value.
#[derive(Debug)]
pub enum Optional {}

/// A setting of a parsed command line, ready to be looked up: the flag's value if given, and
/// the declaration. Made by the accessor methods that `settings!` generates.
#[derive(Debug)]
pub struct Arg<'a, K> {
    flag: Option<&'a str>,
    setting: &'static Setting,
    kind: PhantomData<K>,
}

impl<'a, K> Arg<'a, K> {
    pub(crate) fn new(flag: Option<&'a str>, setting: &'static Setting) -> Self {
        Self {
            flag,
            setting,
            kind: PhantomData,
        }
    }

    /// The declaration.
    pub fn setting(&self) -> &'static Setting {
        self.setting
    }

    /// The flag, else the environment variable `var`: for names computed at run time, such
    /// as `VAST_TCP_PORT_3000`. The declared default does not apply.
    pub(crate) fn get_from(&self, env: &dyn Env, var: &str) -> Option<Raw> {
        Raw::flag(self.flag, self.setting.flag).or_else(|| Raw::env(env, var))
    }

    fn given(&self, env: &dyn Env) -> Option<Raw> {
        match self.setting.env {
            Some(var) => self.get_from(env, var),
            None => Raw::flag(self.flag, self.setting.flag),
        }
    }
}

impl Arg<'_, Defaulted> {
    /// The flag, else the environment variable, else the declared default.
    pub(crate) fn get(&self, env: &dyn Env) -> Raw {
        self.given(env).unwrap_or_else(|| Raw {
            value: self.setting.default.unwrap_or_default().to_string(),
            origin: self.setting.origin(),
            source: Source::Default,
        })
    }
}

impl Arg<'_, Optional> {
    /// The flag, else the environment variable, if either is given.
    pub(crate) fn get(&self, env: &dyn Env) -> Option<Raw> {
        self.given(env)
    }
}

/// Declares a command's settings once: from each entry come the clap argument (flag, value
/// name, help showing the environment name and the default), a row of the `SETTINGS` table,
/// and an accessor method of the same name as the field returning an [`Arg`].
///
/// ```text
/// crate::env::settings! {
///     /// Flags of `vespa worker`.
///     pub struct WorkerArgs {
///         // Plain clap fields, if any, go here verbatim.
///     }
///     /// Reject with 429 when the estimated wait exceeds this many seconds.
///     max_wait_time: "max-wait-time" "SECS", default "10", env "MAX_WAIT_TIME";
///     /// Maximum backend requests in flight.
///     max_concurrency: "max-concurrency" "N", unset "unlimited", env "MAX_CONCURRENCY";
/// }
/// // args.max_wait_time().get(env) is a Raw: the flag, else MAX_WAIT_TIME, else "10".
/// // args.max_concurrency().get(env) is an Option<Raw>; "unlimited" is only shown in --help.
/// ```
///
/// `env "…"` is optional (flag-only settings); `unset ""` shows no default. The default may
/// be any `&'static str` constant. The doc comment is the help, one paragraph. Plain clap
/// fields in the struct's braces come after the settings.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($plain:tt)* }
        $(
            $(#[doc = $doc:literal])*
            $field:ident : $flag:literal $value:literal,
                $kind:ident $default:expr $(, env $env:literal)?;
        )*
    ) => {
        #[derive(Debug, Default, Clone, clap::Args)]
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                #[arg(
                    long = $flag,
                    value_name = $value,
                    help = $crate::env::settings!(
                        @setting $flag, $kind $default, [$($env)?], [$($doc)*]
                    ).help_line(),
                )]
                pub $field: Option<String>,
            )*
            $($plain)*
        }

        impl $name {
            /// Every setting of this command, in `--help` order.
            pub const SETTINGS: &'static [$crate::env::Setting] = &[$(
                $crate::env::settings!(@setting $flag, $kind $default, [$($env)?], [$($doc)*]),
            )*];

            $(
                #[doc = concat!("`--", $flag, "`: its value and declaration.")]
                pub(crate) fn $field(
                    &self,
                ) -> $crate::env::Arg<'_, $crate::env::settings!(@kind $kind)> {
                    const SETTING: $crate::env::Setting = $crate::env::settings!(
                        @setting $flag, $kind $default, [$($env)?], [$($doc)*]
                    );
                    $crate::env::Arg::new(self.$field.as_deref(), &SETTING)
                }
            )*
        }
    };
    (@setting $flag:literal, $kind:ident $default:expr, [$($env:literal)?], [$($doc:literal)*]) => {
        $crate::env::Setting {
            flag: $flag,
            env: $crate::env::settings!(@option $($env)?),
            default: $crate::env::settings!(@default $kind $default),
            default_help: $default,
            doc: &[$($doc),*],
        }
    };
    (@kind default) => { $crate::env::Defaulted };
    (@kind unset) => { $crate::env::Optional };
    (@default default $value:expr) => { Some($value) };
    (@default unset $value:expr) => { None };
    (@option) => { None };
    (@option $value:literal) => { Some($value) };
}
pub(crate) use settings;

#[cfg(test)]
mod tests {
    use super::*;

    settings! {
        /// Test flags.
        struct TestArgs {}
        /// Seconds to wait.
        wait: "wait" "SECS", default "10", env "WAIT";
        /// A limit.
        limit: "limit" "N", unset "unlimited", env "LIMIT";
        /// A flag only.
        only: "only" "X", default "a";
    }

    #[test]
    fn the_flag_wins_then_the_environment_then_the_default() {
        let env = [("WAIT", "5"), ("LIMIT", "")];
        let flag = TestArgs {
            wait: Some("1".into()),
            ..TestArgs::default()
        };
        let raw = flag.wait().get(&env);
        assert_eq!((raw.value.as_str(), raw.origin.as_str()), ("1", "--wait"));
        let raw = TestArgs::default().wait().get(&env);
        assert_eq!((raw.value.as_str(), raw.source), ("5", Source::Env));
        let raw = TestArgs::default().wait().get(&super::super::NoEnv);
        assert_eq!(
            (raw.value.as_str(), raw.origin.as_str(), raw.source),
            ("10", "WAIT", Source::Default)
        );
        // An empty variable is unset.
        assert!(TestArgs::default().limit().get(&env).is_none());
        assert_eq!(TestArgs::default().only().get(&env).origin, "--only");
    }

    #[test]
    fn the_table_and_the_help_come_from_the_declaration() {
        assert_eq!(
            TestArgs::SETTINGS[1],
            Setting {
                flag: "limit",
                env: Some("LIMIT"),
                default: None,
                default_help: "unlimited",
                doc: &[" A limit."],
            }
        );
        assert_eq!(
            TestArgs::SETTINGS[0].help_line(),
            "Seconds to wait. [env: WAIT] [default: 10]"
        );
        assert_eq!(
            TestArgs::SETTINGS[2].help_line(),
            "A flag only. [default: a]"
        );
    }

    #[test]
    fn a_computed_variable_name_is_looked_up_as_given() {
        let env = [("PORT_3000", "41234")];
        let a = TestArgs::default();
        assert_eq!(
            a.limit().get_from(&env, "PORT_3000").unwrap().origin,
            "PORT_3000"
        );
    }
}

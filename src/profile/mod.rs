//! Backend profiles: how to benchmark one kind of backend and count its workload.
//!
//! A profile is a short TOML file (see `docs/BENCHMARKS.md`): the benchmark request, the
//! workload rule (one for the benchmarked route, and one per other route it serves), and
//! how the benchmark ramps. The built-in ones (`openai`, `openai-chat`,
//! `tgi`, `comfyui`) are the files in `profiles/`, compiled into the binary. Adding a backend
//! is writing such a file; no Rust, no rebuild.

pub mod bench;
pub mod cache;
pub mod command;
mod format;
mod formula;
mod measure;
pub mod routes;
pub mod sse;
pub mod template;
pub mod workload;

use http::Method;
pub use routes::{RequestView, Routes};
use std::time::Duration;
use template::Template;
use workload::{JsonPath, WorkloadRule};

/// Built-in profiles: name and TOML text.
pub const BUILT_IN: [(&str, &str); 4] = [
    ("openai", include_str!("../../profiles/openai.toml")),
    (
        "openai-chat",
        include_str!("../../profiles/openai-chat.toml"),
    ),
    ("tgi", include_str!("../../profiles/tgi.toml")),
    ("comfyui", include_str!("../../profiles/comfyui.toml")),
];

/// A profile that cannot be used. Displays as `origin:line: message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ProfileError {
    /// The file (or `built-in NAME`).
    pub origin: String,
    /// 1-based line the problem is on, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.origin, l, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// The benchmark request.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// Method. Default is POST.
    pub method: Method,
    /// Backend path.
    pub path: String,
    /// Per-request timeout. Default is 600 s.
    pub timeout: Duration,
    /// JSON body template; none sends no body.
    pub body: Option<Template>,
}

/// How the benchmark searches for capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// Closed-loop levels of doubling concurrency until throughput stops growing. Default.
    Ramp,
    /// PyWorker's algorithm: `runs` rounds of `concurrency` simultaneous requests; the best
    /// round wins.
    Rounds,
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// Send one request first and fail if it fails. Default is true.
    pub warmup: bool,
    /// Search mode. Default is [`BenchMode::Ramp`].
    pub mode: BenchMode,
    /// Ramp: first level; rounds: requests per round. Default is 8.
    pub concurrency: usize,
    /// Ramp: highest level. Default is 512.
    pub max_concurrency: usize,
    /// Rounds: number of rounds. Default is 8.
    pub runs: usize,
    /// Ramp: how long each level is measured. Default is 3 s.
    pub window: Duration,
    /// Count the work of a streamed answer as it arrives; `None` counts whole requests.
    pub stream: Option<StreamCount>,
}

/// How the benchmark streams its request and counts the answer's work as it arrives.
#[derive(Debug, Clone)]
pub struct StreamCount {
    /// Path of the streamed request when it differs from `request.path`.
    pub path: Option<String>,
    /// Merged into the request body (`stream = true`, …).
    pub body: serde_json::Value,
    /// An event with a non-empty value at this path counts one workload unit.
    pub unit: JsonPath,
    /// An event with a number at this path gives the request's exact total, which
    /// replaces the units counted for it so far.
    pub total: Option<JsonPath>,
}

impl Default for BenchSettings {
    fn default() -> Self {
        Self {
            warmup: true,
            mode: BenchMode::Ramp,
            concurrency: 8,
            max_concurrency: 512,
            runs: 8,
            window: Duration::from_secs(3),
            stream: None,
        }
    }
}

/// A validated backend profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Name (`openai`, or the file's `name`).
    pub name: String,
    /// One line on what it is for.
    pub description: String,
    /// Where it came from: `built-in openai` or a path.
    pub origin: String,
    /// Health path, when the profile sets one.
    pub health: Option<String>,
    /// The benchmark request.
    pub request: BenchRequest,
    /// How workload is counted on the benchmarked route (and, without `routes`, on every
    /// route).
    pub workload: WorkloadRule,
    /// Workload rules of the other routes, in the benchmarked route's units.
    pub routes: Routes,
    /// How the benchmark runs.
    pub benchmark: BenchSettings,
}

impl Profile {
    /// Parses profile text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        format::parse(text, origin)
    }

    /// A built-in profile by name.
    pub fn built_in(name: &str) -> Option<Profile> {
        let (_, text) = BUILT_IN.iter().find(|(n, _)| *n == name)?;
        Some(Self::parse(text, &format!("built-in {name}")).expect("built-in profiles are valid"))
    }

    /// Resolves `BENCHMARK`: a built-in name, PyWorker's `benchmarks.NAME:benchmark` form,
    /// or a path to a TOML file.
    pub fn resolve(spec: &str) -> Result<Profile, ProfileError> {
        let spec = spec.trim();
        if let Some(p) = Self::built_in(spec) {
            return Ok(p);
        }
        if let Some(module) = spec.strip_prefix("benchmarks.") {
            let name = module.split(':').next().unwrap_or("").replace('_', "-");
            return Self::built_in(&name).ok_or_else(|| ProfileError {
                origin: spec.to_string(),
                line: None,
                message: format!(
                    "no built-in profile for PyWorker's {spec:?}; built-ins: {}",
                    names()
                ),
            });
        }
        match std::fs::read_to_string(spec) {
            Ok(text) => Self::parse(&text, spec),
            Err(e) => Err(ProfileError {
                origin: spec.to_string(),
                line: None,
                message: format!(
                    "not a built-in profile ({}) and not a readable file: {e}",
                    names()
                ),
            }),
        }
    }
}

fn names() -> String {
    BUILT_IN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_load_and_pyworker_names_map_to_them() {
        for (name, _) in BUILT_IN {
            assert_eq!(Profile::resolve(name).unwrap().name, name);
        }
        assert_eq!(
            Profile::resolve("benchmarks.openai:benchmark")
                .unwrap()
                .name,
            "openai"
        );
        assert_eq!(
            Profile::resolve("benchmarks.openai_chat:benchmark")
                .unwrap()
                .name,
            "openai-chat"
        );
        assert!(Profile::resolve("benchmarks.whisper:benchmark").is_err());
    }

    #[test]
    fn comfyui_workload_is_width_height_steps_over_1000() {
        let p = Profile::built_in("comfyui").unwrap();
        let body = p
            .request
            .body
            .as_ref()
            .unwrap()
            .render(&template::RenderContext { model: "m".into() });
        assert_eq!(p.workload.measured(&body, None), Some(5242.88));
        fn view<'a>(path: &'a str, text: &'a str) -> RequestView<'a> {
            RequestView {
                path,
                body: Some(text.as_bytes()),
                body_bytes: Some(text.len() as u64),
            }
        }
        let wrapper = body.to_string();
        assert_eq!(
            p.request_workload(&view(&p.request.path, &wrapper)),
            Ok(Some(5242.88))
        );
        // ComfyUI's own queue takes the same graph as `prompt`: the same workload.
        let queued =
            serde_json::json!({"prompt": body["input"]["workflow_json"], "client_id": "c"});
        let queued = queued.to_string();
        assert_eq!(
            p.request_workload(&view("/prompt", &queued)),
            Ok(Some(5242.88))
        );
        // Any other path has no rule: the client's cost, else DEFAULT_COST.
        assert_eq!(p.request_workload(&view("/history", "")), Ok(None));
    }

    #[test]
    fn errors_name_the_file_line_and_problem() {
        let cases = [
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"max_tokens\"\nbogus = 1\n",
                6,
                "unknown field",
            ),
            (
                "name = \"x\"\n[request]\npath = \"a\"\n[workload]\nrequest = \"m\"\n",
                3,
                "must start with /",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[request.body]\np = \"{{wrds 3}}\"\n[workload]\nrequest = \"m\"\n",
                5,
                "unknown generator",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nformula = \"w * h\"\n[workload.vars]\nw = \"a\"\n",
                5,
                "\"h\"",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[benchmark]\nmode = \"fast\"\n",
                7,
                "expected ramp",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\ntimeout = 1e300\n[workload]\nrequest = \"m\"\n",
                4,
                "request.timeout",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[benchmark]\nwindow = 0\n",
                7,
                "benchmark.window",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[benchmark.stream]\npath = \"s\"\nunit = \"a\"\n",
                7,
                "must start with /",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[benchmark.stream]\nbody = 3\nunit = \"a\"\n",
                7,
                "must be a table",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[benchmark.stream]\nunit = \"a..b\"\n",
                7,
                "benchmark.stream.unit",
            ),
            ("name = \"x\"\n[request\n", 2, ""),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"b\"]\nconstant = 1\n",
                6,
                "must start with /",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"/a\"]\nconstant = 1\n",
                6,
                "benchmarked route",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"/b\"]\nconstant = 1\nresponse = \"u\"\n",
                8,
                "only [workload]",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"/b\"]\nformula = \"sqrt(x)\"\n",
                7,
                "unknown function",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"/b\"]\nformula = \"c / 600\"\nvars = { c = \"len(input)\" }\n",
                8,
                "routes.\"/b\".vars.c: unknown measure",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"/b\"]\nformula = \"body_bytes\"\n[routes.\"/b\".vars]\nbody_bytes = \"size\"\n",
                9,
                "built in",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"/b\"]\nformula = \"c\"\n",
                7,
                "does not define",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"/b*/c\"]\nconstant = 1\n",
                6,
                "may only end",
            ),
            (
                "name = \"x\"\n[request]\npath = \"/a\"\n[workload]\nrequest = \"m\"\n[routes.\"/b\"]\n",
                6,
                "needs request, formula or constant",
            ),
        ];
        for (text, line, needle) in cases {
            let e = Profile::parse(text, "my.toml").unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert!(
                e.to_string().starts_with(&format!("my.toml:{line}: ")),
                "{e}"
            );
            assert!(e.message.contains(needle), "{e}");
        }
        let e = Profile::resolve("/nonexistent/profile.toml").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/profile.toml"), "{e}");
    }
}

//! `start_server.sh` and `worker.py` end to end: a fake console signs the CSR with a test CA
//! (the `openssl` CLI), the fake autoscaler receives the reports, and the script starts the
//! real `vespa` binary. Each run is its own process group, killed when the test ends.

use crate::fake_autoscaler::FakeAutoscaler;
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const VESPA: &str = env!("CARGO_BIN_EXE_vespa");
/// The public port the tests pretend Vast mapped the worker's port to.
const VAST_PORT: &str = "41234";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, SeqCst);
        let dir =
            std::env::temp_dir().join(format!("vespa-start-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to completion; panics with its stderr when it fails.
fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    run(std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args))
}

/// A certificate authority made with the `openssl` CLI, and a console whose `sign_cert`
/// signs the posted CSR with it for IP 127.0.0.1, as Vast's console signs for the public IP.
struct Console {
    ca: TempDir,
    backend: Backend,
}

impl Console {
    async fn start() -> Console {
        let ca = TempDir::new("ca");
        openssl(
            &ca.0,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=vespa test CA",
                "-days",
                "2",
            ],
        );
        std::fs::write(ca.path("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
        let dir = ca.0.clone();
        let backend = Backend::start(move |seen| {
            let dir = dir.clone();
            async move {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let csr = dir.join(format!("{}.csr", NEXT.fetch_add(1, SeqCst)));
                std::fs::write(&csr, &seen.body).unwrap();
                let out = tokio::process::Command::new("openssl")
                    .current_dir(&dir)
                    .args(["x509", "-req", "-in"])
                    .arg(&csr)
                    .args(["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"])
                    .args(["-days", "1", "-extfile", "san.ext"])
                    .output()
                    .await
                    .unwrap();
                let status = if out.status.success() { 200 } else { 400 };
                let mut r = http::Response::new(vespa::http_util::full(out.stdout));
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r
            }
        })
        .await;
        Console { ca, backend }
    }

    fn sign_url(&self) -> String {
        format!("{}api/v0/sign_cert/?instance_id=7", self.backend.url())
    }

    fn ca_file(&self) -> PathBuf {
        self.ca.path("ca.crt")
    }
}

/// A port that was free a moment ago (the worker binds it on 0.0.0.0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bash start_server.sh` with a clean environment: PATH, HOME, a workspace in `dir`, TLS
/// files in `dir`, and the worker settings every test shares.
fn script(dir: &TempDir, port: u16, report_addr: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(Path::new(REPO).join("start_server.sh"));
    base_env(&mut cmd, dir, port, report_addr);
    cmd
}

fn base_env(cmd: &mut tokio::process::Command, dir: &TempDir, port: u16, report_addr: &str) {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", std::env::var("HOME").unwrap())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("WORKSPACE_DIR", dir.path("ws"))
        .env("TLS_CERT", dir.path("tls/instance.crt"))
        .env("TLS_KEY", dir.path("tls/instance.key"))
        .env("REPORT_ADDR", report_addr)
        .env("CONTAINER_ID", "7")
        .env("MASTER_TOKEN", "mt-secret")
        .env("PUBLIC_IPADDR", "127.0.0.1")
        .env("WORKER_PORT", port.to_string())
        // Tests bind no port they did not pick: no plain-HTTP /session/end on port + 1.
        .env("WORKER_HTTP_PORT", "off")
        .env(format!("VAST_TCP_PORT_{port}"), VAST_PORT)
        .env("UNSECURED", "true")
        .env("BENCHMARK", "none")
        .env("MAX_PERF", "100")
        .env("VESPA_BIN", VESPA);
}

/// A running script: its own process group, its output line by line.
struct Launched {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Launched {
    fn spawn(mut cmd: tokio::process::Command) -> Launched {
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for pipe in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut pipe = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = pipe.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        Launched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `needle`.
    async fn line_containing(&mut self, needle: &str) -> String {
        let wait = async {
            loop {
                match self.lines.recv().await {
                    Some(line) => {
                        self.seen.push(line.clone());
                        if line.contains(needle) {
                            return line;
                        }
                    }
                    None => panic!("output ended without {needle:?}"),
                }
            }
        };
        match tokio::time::timeout(PATIENCE, wait).await {
            Ok(line) => line,
            Err(_) => panic!("no line with {needle:?}; output so far:\n{}", self.output()),
        }
    }

    /// Waits for the script to exit; returns its code and its whole output.
    async fn exit(&mut self) -> (i32, String) {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the script did not exit; output:\n{}", self.output()))
            .unwrap();
        // The output pipes close once every process in the group is gone.
        while let Ok(Some(line)) = tokio::time::timeout(PATIENCE, self.lines.recv()).await {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.output())
    }

    fn output(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("still running").to_string();
        run(std::process::Command::new("kill").args([sig, &pid]));
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// A report of a ready worker. Internal: the worker installs its SIGTERM handler just after
/// printing `listening on`, so a TERM sent on that line can still kill it; tests that drain
/// wait for this later state first.
fn loaded(report: &Value) -> bool {
    report["loadtime"].as_f64().is_some_and(|t| t > 0.0)
}

async fn ok_backend() -> Backend {
    Backend::start(|_| async { json(200, serde_json::json!({})) }).await
}

/// Every field of PROTOCOL.md §5.1, counters zero, for the script's own error report.
fn assert_zero_report(report: &Value, url: &str) {
    let mut keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "additional_disk_usage",
            "cur_capacity",
            "cur_load",
            "cur_perf",
            "disk_usage",
            "error_msg",
            "id",
            "loadtime",
            "max_capacity",
            "max_perf",
            "mtoken",
            "new_load",
            "num_requests_recieved",
            "num_requests_working",
            "rej_load",
            "url",
            "version",
            "working_request_idxs",
        ]
    );
    assert_eq!(report["id"], 7);
    assert_eq!(report["mtoken"], "mt-secret");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["url"], url);
    assert_eq!(report["working_request_idxs"], serde_json::json!([]));
    for counter in ["loadtime", "cur_load", "new_load", "max_perf", "cur_perf"] {
        assert_eq!(report[counter], 0, "{counter}");
    }
}

/// A script booted with `USE_SSL=true` against the fake console, its worker listening.
struct TlsBoot {
    dir: TempDir,
    console: Console,
    autoscaler: FakeAutoscaler,
    port: u16,
    _backend: Backend,
    _run: Launched,
}

async fn tls_boot(label: &str) -> TlsBoot {
    let (dir, console, autoscaler) = (
        TempDir::new(label),
        Console::start().await,
        FakeAutoscaler::start(true).await,
    );
    let backend = ok_backend().await;
    let port = free_port();
    let mut cmd = script(&dir, port, &autoscaler.url());
    cmd.env("USE_SSL", "true")
        .env("SIGN_CERT_URL", console.sign_url())
        .env("BACKEND_URL", backend.url().to_string());
    let mut run = Launched::spawn(cmd);
    run.line_containing("listening on").await;
    TlsBoot {
        dir,
        console,
        autoscaler,
        port,
        _backend: backend,
        _run: run,
    }
}

#[tokio::test]
async fn tls_boot_installs_a_console_signed_certificate_and_reports_an_https_url() {
    let mut boot = tls_boot("tls").await;
    let (dir, console, autoscaler) = (&boot.dir, &mut boot.console, &mut boot.autoscaler);

    let csr = console.backend.next_request().await;
    assert_eq!(csr.method, http::Method::POST);
    assert_eq!(csr.uri.query(), Some("instance_id=7"));
    assert_eq!(csr.headers["content-type"], "application/octet-stream");
    assert!(csr.body.starts_with(b"-----BEGIN CERTIFICATE REQUEST-----"));

    let (cert, key) = (dir.path("tls/instance.crt"), dir.path("tls/instance.key"));
    let verified = openssl(
        &dir.0,
        &[
            "verify",
            "-CAfile",
            console.ca_file().to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
    );
    assert!(verified.trim_end().ends_with(": OK"), "{verified}");
    assert_eq!(
        openssl(
            &dir.0,
            &["x509", "-noout", "-pubkey", "-in", cert.to_str().unwrap()]
        ),
        openssl(&dir.0, &["pkey", "-pubout", "-in", key.to_str().unwrap()]),
        "the certificate is for the key the script made"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");

    let report = autoscaler
        .status_where(|r| r["url"] == format!("https://127.0.0.1:{VAST_PORT}"))
        .await;
    assert_eq!(report["error_msg"], "");
    assert_eq!(report["id"], 7);
}

#[tokio::test]
async fn tls_boot_serves_https_with_the_signed_certificate() {
    let boot = tls_boot("https").await;
    let (console, port) = (&boot.console, boot.port);

    let ca = std::fs::read(console.ca_file()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let resp = tokio::time::timeout(
        PATIENCE,
        client
            .get(format!("https://127.0.0.1:{port}/_vespa/health"))
            .send(),
    )
    .await
    .expect("answer in time")
    .expect("an HTTPS answer verified against the test CA");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn plain_boot_serves_http_reports_and_drains_on_sigterm() {
    let (dir, mut autoscaler, backend) = (
        TempDir::new("plain"),
        FakeAutoscaler::start(true).await,
        ok_backend().await,
    );
    let port = free_port();
    let mut cmd = script(&dir, port, &autoscaler.url());
    cmd.env("USE_SSL", "false")
        .env("BACKEND_URL", backend.url().to_string());
    let mut run = Launched::spawn(cmd);
    run.line_containing("listening on").await;

    let report = autoscaler
        .status_where(|r| r["url"] == format!("http://127.0.0.1:{VAST_PORT}") && loaded(r))
        .await;
    assert_eq!(report["mtoken"], "mt-secret");
    let health = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = health
        .get(format!("http://127.0.0.1:{port}/_vespa/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        !dir.path("tls/instance.crt").exists(),
        "no certificate without USE_SSL"
    );

    run.signal("-TERM");
    let (code, out) = run.exit().await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("worker stopped"), "the worker drained: {out}");
    let log = std::fs::read_to_string(dir.path("ws/vespa.log")).unwrap();
    assert!(log.contains("listening on") && log.contains("vespa worker exited"));
}

#[tokio::test]
async fn failed_certificate_signing_is_reported_to_every_report_addr() {
    let (dir, mut first, mut second) = (
        TempDir::new("sign500"),
        FakeAutoscaler::start(true).await,
        FakeAutoscaler::start(true).await,
    );
    let console = Backend::start(|_| async {
        let mut r = http::Response::new(vespa::http_util::full("sign_cert is down"));
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let port = free_port();
    let mut cmd = script(&dir, port, &format!("{}, {}/", first.url(), second.url()));
    cmd.env("USE_SSL", "true")
        .env("SIGN_CERT_URL", format!("{}sign", console.url()))
        .env("BACKEND_URL", "http://127.0.0.1:1");
    let mut run = Launched::spawn(cmd);

    let https_url = format!("https://127.0.0.1:{VAST_PORT}");
    for autoscaler in [&mut first, &mut second] {
        let report = autoscaler.status_where(|_| true).await;
        assert_zero_report(&report, &https_url);
        let msg = report["error_msg"].as_str().unwrap();
        assert!(
            msg.contains("signing the TLS certificate")
                && msg.contains("HTTP 500")
                && msg.contains("sign_cert is down"),
            "{msg}"
        );
    }
    let (code, out) = run.exit().await;
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("listening on"), "no worker started: {out}");
    assert!(!dir.path("tls/instance.crt").exists());
}

#[tokio::test]
async fn error_message_with_quotes_and_backslashes_arrives_as_valid_json() {
    let (dir, mut autoscaler) = (TempDir::new("quote"), FakeAutoscaler::start(true).await);
    let bin = dir.path(r#"no "such\ vespa"#);
    let mut cmd = script(&dir, free_port(), &autoscaler.url());
    cmd.env("USE_SSL", "false")
        .env("BACKEND_URL", "http://127.0.0.1:1")
        .env("VESPA_BIN", &bin);
    let mut run = Launched::spawn(cmd);

    let report = autoscaler.status_where(|_| true).await;
    assert_eq!(
        report["error_msg"],
        format!("VESPA_BIN={} is not an executable file", bin.display())
    );
    let (code, out) = run.exit().await;
    assert_eq!(code, 1, "{out}");
}

#[tokio::test]
async fn json_encoders_agree_on_quotes_backslashes_and_control_characters() {
    let awkward = "a \"quoted\" C:\\path\\ \n\ttab\r \u{1} \u{1f} \u{7f} é ✓ $HOME `x`";
    let mut tools = vec!["python3", "sh"];
    if std::process::Command::new("jq")
        .arg("--version")
        .output()
        .is_ok()
    {
        tools.push("jq");
    }
    for tool in tools {
        let out = run(std::process::Command::new("bash")
            .args(["-c", r#"source "$1" && json_str "$2""#, "bash"])
            .arg(Path::new(REPO).join("start_server.sh"))
            .arg(awkward)
            .env("VESPA_JSON_TOOL", tool));
        let parsed: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{tool}: {e}: {out}"));
        assert_eq!(parsed, awkward, "{tool}");
    }
}

#[tokio::test]
async fn worker_exiting_non_zero_is_reported_with_its_last_line() {
    let (dir, mut autoscaler) = (TempDir::new("exit64"), FakeAutoscaler::start(true).await);
    let port = free_port();
    let mut cmd = script(&dir, port, &autoscaler.url());
    cmd.env("USE_SSL", "false")
        .env("BACKEND_URL", "http://127.0.0.1:1")
        .env("MAX_PERF", "lots");
    let mut run = Launched::spawn(cmd);

    let report = autoscaler.status_where(|r| r["error_msg"] != "").await;
    assert_zero_report(&report, &format!("http://127.0.0.1:{VAST_PORT}"));
    let msg = report["error_msg"].as_str().unwrap();
    assert!(
        msg.starts_with("vespa worker exited with code 64: ") && msg.contains("MAX_PERF"),
        "{msg}"
    );
    let (code, out) = run.exit().await;
    assert_eq!(code, 64, "{out}");
}

#[tokio::test]
async fn binary_from_url_is_checked_against_its_sha256_and_cached() {
    let (dir, mut autoscaler, backend) = (
        TempDir::new("download"),
        FakeAutoscaler::start(true).await,
        ok_backend().await,
    );
    // A stand-in for a published binary: small, and it runs the real one.
    let published = format!("#!/bin/sh\nexec '{VESPA}' \"$@\"\n");
    std::fs::write(dir.path("published"), &published).unwrap();
    let sha = openssl(&dir.0, &["dgst", "-sha256", "-r", "published"]);
    let sha = sha.split_whitespace().next().unwrap().to_string();
    let files = Backend::start(move |_| {
        let published = published.clone();
        async move { http::Response::new(vespa::http_util::full(published)) }
    })
    .await;
    let url = format!("{}releases/vespa", files.url());
    let report_addr = autoscaler.url();
    let launch = |sha: &str| {
        let mut cmd = script(&dir, free_port(), &report_addr);
        cmd.env_remove("VESPA_BIN")
            .env("USE_SSL", "false")
            .env("BACKEND_URL", backend.url().to_string())
            .env("VESPA_BIN_URL", &url)
            .env("VESPA_BIN_SHA256", sha);
        Launched::spawn(cmd)
    };

    let wrong = "0".repeat(64);
    let mut run = launch(&wrong);
    let report = autoscaler.status_where(|r| r["error_msg"] != "").await;
    let msg = report["error_msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("has sha256 {sha}, not VESPA_BIN_SHA256={wrong}")),
        "{msg}"
    );
    assert_ne!(run.exit().await.0, 0);
    drop(run);

    let mut run = launch(&sha.to_uppercase());
    run.line_containing("listening on").await;
    assert!(dir.path(&format!("ws/bin/vespa-{sha}")).exists());
}

#[tokio::test]
async fn without_a_binary_it_builds_this_repository_with_cargo_install() {
    let (dir, autoscaler, backend) = (
        TempDir::new("build"),
        FakeAutoscaler::start(true).await,
        ok_backend().await,
    );
    // A cargo that records its arguments and "installs" a wrapper around the real binary.
    let fake_bin = dir.path("fake-bin");
    std::fs::create_dir_all(&fake_bin).unwrap();
    let cargo = fake_bin.join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\necho \"$@\" > '{args}'\nwhile [ \"$1\" != --root ]; do shift; done\nmkdir -p \"$2/bin\"\nprintf '#!/bin/sh\\nexec %s \"$@\"\\n' '{VESPA}' > \"$2/bin/vespa\"\nchmod +x \"$2/bin/vespa\"\n",
            args = dir.path("cargo-args").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = script(&dir, free_port(), &autoscaler.url());
    cmd.env_remove("VESPA_BIN")
        .env(
            "PATH",
            format!("{}:{}", fake_bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("USE_SSL", "false")
        .env("BACKEND_URL", backend.url().to_string());
    let mut run = Launched::spawn(cmd);
    run.line_containing("listening on").await;
    let args = std::fs::read_to_string(dir.path("cargo-args")).unwrap();
    assert_eq!(
        args.trim_end(),
        format!(
            "install --locked --path {REPO} --root {}",
            dir.path("ws").display()
        )
    );
}

#[tokio::test]
async fn worker_py_runs_start_server_and_forwards_sigterm() {
    let (dir, mut autoscaler, backend) = (
        TempDir::new("worker-py"),
        FakeAutoscaler::start(true).await,
        ok_backend().await,
    );
    // As Vast's bootstrap does in the cloned PYWORKER_REPO.
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-m", "worker"]).current_dir(REPO);
    base_env(&mut cmd, &dir, free_port(), &autoscaler.url());
    cmd.env("USE_SSL", "false")
        .env("BACKEND_URL", backend.url().to_string());
    let mut run = Launched::spawn(cmd);
    run.line_containing("listening on").await;
    autoscaler.status_where(loaded).await;

    run.signal("-TERM");
    let (code, out) = run.exit().await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("worker stopped"), "the worker drained: {out}");
}

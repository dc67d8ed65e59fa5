//! `vespa demo`: the whole serverless flow on one machine, in one process.
//!
//! Two simulated model servers of different capacity, a local autoscaler, two signed
//! workers (each benchmarks its backend at start-up and reports to the autoscaler) and a
//! client proxy. A caller talks plain OpenAI HTTP to the proxy; the proxy routes each
//! request through the autoscaler to the less loaded worker and signs it; the worker
//! verifies, admits, forwards and streams. With `--duration` the demo drives traffic through
//! the proxy with the load tester and prints its report; on a terminal, `vespa top`'s view
//! of the fleet shows meanwhile (q closes it early; the report still follows).

use crate::autoscaler::{Autoscaler, AutoscalerConfig, WorkerAuth};
use crate::client::ClientConfig;
use crate::client::load::{self, Generator, LoadPlan, LoadReport, Pace, Target};
use crate::client::proxy::{Proxy, ProxyConfig};
use crate::profile::Profile;
use crate::signing::SigningKey;
use crate::sim::{Sim, SimConfig};
use crate::top::{Fetcher, Source, TopConfig};
use crate::worker::Worker;
use crate::worker::config::{Benchmark, WorkerConfig};
use crate::worker::lifecycle::State;
use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long the demo waits for the autoscaler to read that ready workers are ready: they
/// report it at once, so this only bounds a report that cannot get through.
pub const AUTOSCALER_PATIENCE: Duration = Duration::from_secs(15);

/// Flags of `vespa demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Drive traffic through the proxy for this many seconds, print the report, and exit.
    /// Without it the demo runs until interrupted.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Address of the client proxy.
    #[arg(long, value_name = "ADDR", default_value = crate::client::proxy::DEFAULT_LISTEN)]
    pub listen: String,
    /// Requests in flight during --duration.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 24)]
    pub concurrency: usize,
}

/// What the demo starts.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Decode rate (tokens/s per sequence) and batch size of each simulated backend; one
    /// worker each. Default is (400, 8) and (400, 16).
    pub backends: Vec<(f64, usize)>,
    /// Proxy listen address. Default is 127.0.0.1:8010.
    pub proxy_listen: SocketAddr,
    /// Endpoint name. Default is `demo`.
    pub endpoint: String,
    /// Endpoint API key. Default is `demo-key`.
    pub api_key: String,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            backends: vec![(400.0, 8), (400.0, 16)],
            proxy_listen: crate::client::proxy::DEFAULT_LISTEN
                .parse()
                .expect("a valid address"),
            endpoint: "demo".into(),
            api_key: "demo-key".into(),
        }
    }
}

/// A running demo. Dropping it stops everything.
pub struct Demo {
    /// The simulated backends.
    pub sims: Vec<Sim>,
    /// The local control plane.
    pub autoscaler: Autoscaler,
    /// One worker per backend.
    pub workers: Vec<Worker>,
    /// The client proxy.
    pub proxy: Proxy,
    /// The master token the workers report with (made for this run).
    pub master_token: String,
}

impl Demo {
    /// Starts every part; workers benchmark their backends in the background.
    pub async fn start(config: &DemoConfig) -> anyhow::Result<Demo> {
        let mut sims = Vec::new();
        for (decode_tps, max_batch) in &config.backends {
            let c = SimConfig {
                listen: "127.0.0.1:0".parse()?,
                decode_tps: *decode_tps,
                max_batch: *max_batch,
                ..Default::default()
            };
            sims.push(Sim::start(c).await?);
        }
        // The workers' reports are authenticated as on Vast: a master token made for this
        // run, given to each worker as its MASTER_TOKEN.
        let master_token = random_token()?;
        let mut ac = AutoscalerConfig::new(
            SigningKey::generate()?,
            WorkerAuth::MasterToken(master_token.clone()),
        )
        .endpoint(&config.endpoint, &config.api_key);
        ac.listen = "127.0.0.1:0".parse()?;
        let autoscaler = Autoscaler::start(ac).await?;
        let mut profile = Profile::built_in("openai").expect("built-in");
        // The sims stream at a steady rate: a 1 s window measures them as well as 3 s, and
        // the demo's workers are ready sooner.
        profile.benchmark.window = Duration::from_secs(1);
        let profile = Arc::new(profile);
        let mut workers = Vec::new();
        for (i, sim) in sims.iter().enumerate() {
            let mut w = WorkerConfig::new(sim.url().parse()?, 0.0);
            w.listen = "127.0.0.1:0".parse()?;
            w.benchmark = Benchmark::Profile {
                profile: Arc::clone(&profile),
                measure: true,
            };
            w.benchmark_cache = None;
            w.vast.report_addrs = vec![autoscaler.url().parse()?];
            w.vast.container_id = Some(i as i64 + 1);
            w.vast.master_token = Some(master_token.clone());
            w.ready_poll_interval = Duration::from_millis(200);
            workers.push(Worker::start(w).await?);
        }
        let mut client = ClientConfig::new(
            autoscaler.url(),
            config.endpoint.clone(),
            config.api_key.clone(),
        );
        client.profile = Some(profile);
        let proxy = Proxy::start(ProxyConfig {
            listen: config.proxy_listen,
            ..ProxyConfig::new(client)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e} (another program uses it? try --listen 127.0.0.1:0)"))?;
        Ok(Demo {
            sims,
            autoscaler,
            workers,
            proxy,
            master_token,
        })
    }

    /// Waits until every worker is ready and the autoscaler has read so (until then it
    /// routes everything to the workers it knows are ready); fails with the first worker
    /// error, or when the autoscaler has not heard within [`AUTOSCALER_PATIENCE`].
    pub async fn ready(&self, endpoint: &str) -> anyhow::Result<()> {
        for w in &self.workers {
            let mut states = w.shared().lifecycle.subscribe();
            let state = states
                .wait_for(|s| matches!(s, State::Ready | State::Errored(_)))
                .await?
                .clone();
            if let State::Errored(e) = state {
                anyhow::bail!("worker {} failed: {e}", w.local_addr());
            }
        }
        let heard = async {
            loop {
                let census = self
                    .autoscaler
                    .shared()
                    .registry()
                    .census(endpoint, tokio::time::Instant::now());
                if census.ready >= self.workers.len() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(AUTOSCALER_PATIENCE, heard)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the autoscaler did not hear that every worker is ready within {} s",
                    AUTOSCALER_PATIENCE.as_secs()
                )
            })
    }

    /// `vespa top` watching this demo's endpoint `config.endpoint`, with the workers'
    /// master token so their status is read too.
    pub fn top_config(&self, config: &DemoConfig) -> TopConfig {
        let mut top = TopConfig::new(Source::Endpoint {
            autoscaler_url: self.autoscaler.url(),
            name: config.endpoint.clone(),
            api_key: config.api_key.clone(),
        });
        top.master_token = Some(self.master_token.clone());
        top
    }

    /// Sends traffic through the proxy for `duration` with `concurrency` in flight.
    pub async fn drive(
        &self,
        duration: Duration,
        concurrency: usize,
    ) -> anyhow::Result<LoadReport> {
        let http = load::target::plain_client();
        let target = Target::Plain {
            http,
            base: self.proxy.url(),
        };
        let generator = Generator::new(
            Arc::new(Profile::built_in("openai").expect("built-in")),
            "model",
            false,
        );
        let plan = LoadPlan {
            pace: Pace::Concurrency(concurrency),
            requests: None,
            duration: Some(duration),
            timeout: Duration::from_secs(120),
        };
        Ok(load::run_load(target, generator, plan, Arc::default()).await)
    }
}

/// Runs `drive` under `vespa top`'s view of `top` on the terminal. The view closes when
/// `drive` ends, or earlier on q (then `drive` goes on to its end); either way the terminal
/// is back to normal when this returns.
async fn watched<T>(drive: impl Future<Output = T>, top: &TopConfig, colour: bool) -> T {
    let fetcher = match Fetcher::new(top) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vespa: no live view: {e}");
            return drive.await;
        }
    };
    let mut drive = std::pin::pin!(drive);
    tokio::select! {
        out = &mut drive => return out,
        shown = crate::top::screen::watch(top, fetcher, colour) => match shown {
            Ok(()) => println!("view closed; the report follows when the traffic ends"),
            Err(e) => eprintln!("vespa: the live view failed: {e}"),
        },
    }
    drive.await
}

/// 128 random bits as hex.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no random bytes"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs `vespa demo`; returns the exit code.
pub async fn run(args: &DemoArgs) -> i32 {
    let listen = match args.listen.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!(
                "vespa: invalid --listen {:?}: expected an address like 127.0.0.1:8010",
                args.listen
            );
            return crate::env::EXIT_CONFIG;
        }
    };
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        eprintln!("vespa: invalid --duration {d}: expected seconds > 0");
        return crate::env::EXIT_CONFIG;
    }
    if args.concurrency == 0 {
        eprintln!("vespa: invalid --concurrency: expected at least 1");
        return crate::env::EXIT_CONFIG;
    }
    crate::logging::init("warn", false);
    let config = DemoConfig {
        proxy_listen: listen,
        ..Default::default()
    };
    let demo = match Demo::start(&config).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vespa: demo failed to start: {e:#}");
            return 1;
        }
    };
    println!("vespa demo: the whole serverless flow on this machine\n");
    for (i, (sim, w)) in demo.sims.iter().zip(&demo.workers).enumerate() {
        let c = sim.config();
        println!(
            "  backend {}   {}  vespa sim, {} x {} tokens/s = {} tokens/s",
            i + 1,
            sim.url(),
            c.max_batch,
            c.decode_tps,
            c.capacity_tokens_per_sec()
        );
        println!(
            "  worker {}    http://{}  in front of backend {}",
            i + 1,
            w.local_addr(),
            i + 1
        );
    }
    println!(
        "  autoscaler  {}  endpoint {:?}, API key {:?}",
        demo.autoscaler.url(),
        config.endpoint,
        config.api_key
    );
    println!("  proxy       {}\n", demo.proxy.url());
    println!("waiting for the workers to benchmark their backends...");
    if let Err(e) = demo.ready(&config.endpoint).await {
        eprintln!("vespa: {e:#}");
        return 1;
    }
    for (i, (sim, w)) in demo.sims.iter().zip(&demo.workers).enumerate() {
        println!(
            "  worker {} ready: measured {:.0} tokens/s (true capacity {})",
            i + 1,
            w.shared().ledger.snapshot().max_perf,
            sim.config().capacity_tokens_per_sec()
        );
    }
    println!(
        "\ntry it:\n  curl {}/v1/chat/completions -H 'content-type: application/json' \\",
        demo.proxy.url()
    );
    println!(
        "    -d '{{\"model\": \"model\", \"messages\": [{{\"role\": \"user\", \"content\": \"hello\"}}], \"max_tokens\": 32, \"stream\": true}}'\n"
    );
    let Some(secs) = args.duration else {
        println!("Ctrl-C stops the demo.");
        crate::serve::shutdown_signal().await;
        return 0;
    };
    println!(
        "driving traffic through the proxy for {secs} s ({} requests in flight)...\n",
        args.concurrency
    );
    let drive = demo.drive(Duration::from_secs_f64(secs), args.concurrency);
    let driven = if std::io::stdout().is_terminal() {
        let colour = crate::top::colour(&crate::env::ProcessEnv);
        watched(drive, &demo.top_config(&config), colour).await
    } else {
        drive.await
    };
    match driven {
        Ok(report) => {
            print!("{}", report.text());
            if report.ok > 0 { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("vespa: {e:#}");
            1
        }
    }
}

//! Polling the fleet: the autoscaler's worker list, then every worker's `/_vespa/metrics`
//! and `/_vespa/status` at once, each call bounded by the timeout.
//!
//! Nothing here fails the poll: an autoscaler that cannot be read leaves the last list it
//! gave in use (and says why), a worker that cannot be read is a [`Probe`] with the reason.
//! https workers are called as the client library calls them (`--ca-cert`, else Vast's
//! root CA), through the same [`Workers`] clients.

use super::config::{Source, TopConfig};
use super::model::{Poll, Probe};
use super::parse::{self, Listed};
use crate::client::ClientConfig;
use crate::client::workers::{Workers, causes, tls_failure};
use serde_json::json;
use std::time::{Duration, Instant};

/// Polls one fleet. Keeps the autoscaler's last list.
#[derive(Debug)]
pub struct Fetcher {
    source: Source,
    control: reqwest::Client,
    workers: Workers,
    timeout: Duration,
    master_token: Option<String>,
    listed: Vec<Listed>,
}

impl Fetcher {
    /// A fetcher for `config`'s fleet; fails only when an HTTP client cannot be built.
    pub fn new(config: &TopConfig) -> Result<Fetcher, String> {
        let base = match &config.source {
            Source::Endpoint { autoscaler_url, .. } => autoscaler_url.clone(),
            Source::Workers(urls) => urls.first().cloned().unwrap_or_default(),
        };
        let mut client = ClientConfig::new(base, "", "");
        client.connect_timeout = config.timeout;
        client.worker_ca = config.worker_ca.clone();
        client.ca_cache = config.ca_cache.clone();
        let workers = Workers::new(&client).map_err(|e| e.to_string())?;
        let control = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Fetcher {
            source: config.source.clone(),
            control,
            workers,
            timeout: config.timeout,
            master_token: config.master_token.clone(),
            listed: Vec::new(),
        })
    }

    /// One poll of the whole fleet.
    pub async fn poll(&mut self) -> Poll {
        let (autoscaler, targets): (_, Vec<(String, Option<Listed>)>) = match &self.source {
            Source::Workers(urls) => (None, urls.iter().map(|u| (u.clone(), None)).collect()),
            Source::Endpoint { .. } => {
                // The last list read stands in while the autoscaler cannot be reached.
                let answer = self.list().await.map(|list| self.listed = list);
                let targets = self
                    .listed
                    .iter()
                    .map(|l| (l.url.clone(), Some(l.clone())))
                    .collect();
                (Some(answer), targets)
            }
        };
        let probes = targets
            .into_iter()
            .map(|(url, listed)| self.probe(url, listed));
        let workers = futures_util::future::join_all(probes).await;
        Poll {
            at: Instant::now(),
            autoscaler,
            workers,
        }
    }

    /// The autoscaler's list of the endpoint's workers, by id then URL.
    async fn list(&self) -> Result<Vec<Listed>, String> {
        let Source::Endpoint {
            autoscaler_url,
            name,
            api_key,
        } = &self.source
        else {
            return Ok(Vec::new());
        };
        let url = format!("{autoscaler_url}/get_endpoint_workers/");
        let resp = self
            .control
            .post(&url)
            .bearer_auth(api_key)
            .json(&json!({"endpoint": name, "api_key": api_key}))
            .timeout(self.timeout)
            .send()
            .await;
        let body = answer(resp, self.timeout)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let mut list = parse::worker_list(&body).map_err(|e| format!("{url}: {e}"))?;
        list.sort_by(|a, b| (a.id, &a.url).cmp(&(b.id, &b.url)));
        Ok(list)
    }

    /// One worker's metrics and status, both at once.
    async fn probe(&self, url: String, listed: Option<Listed>) -> Probe {
        if url.is_empty() {
            let id = listed.as_ref().and_then(|l| l.id).unwrap_or_default();
            return Probe {
                url: format!("worker {id} (no URL)"),
                listed,
                metrics: Err("the autoscaler lists no URL for it".into()),
                status: None,
            };
        }
        let http = match self.workers.for_url(&url).await {
            Ok(http) => http,
            Err(e) => {
                return Probe {
                    url,
                    listed,
                    metrics: Err(e.to_string()),
                    status: None,
                };
            }
        };
        let metrics = async {
            let resp = http
                .get(format!("{url}/_vespa/metrics"))
                .timeout(self.timeout)
                .send()
                .await;
            let text = answer(resp, self.timeout)
                .await
                .map_err(|e| format!("/_vespa/metrics: {e}"))?;
            parse::metrics(&text)
        };
        let status = async {
            let mut req = http
                .get(format!("{url}/_vespa/status"))
                .timeout(self.timeout);
            if let Some(token) = &self.master_token {
                req = req.bearer_auth(token);
            }
            // Without the master token a worker that has one answers 401: no status, and
            // the metrics say the rest.
            let text = answer(req.send().await, self.timeout).await.ok()?;
            parse::status(&text).ok()
        };
        let (metrics, status) = tokio::join!(metrics, status);
        Probe {
            url,
            listed,
            metrics,
            status,
        }
    }
}

/// The body of a 2xx answer, else what went wrong in a few words.
async fn answer(
    resp: Result<reqwest::Response, reqwest::Error>,
    timeout: Duration,
) -> Result<String, String> {
    let resp = resp.map_err(|e| describe(&e, timeout))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| describe(&e, timeout))?;
    if status.is_success() {
        return Ok(body);
    }
    let message = crate::client::error_message(&body);
    Err(format!("HTTP {}: {message}", status.as_u16()))
}

/// A transport error in a few words: the timeout, the TLS failure, or the innermost cause
/// (`Connection refused (os error 111)`).
pub fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    if let Some(tls) = tls_failure(e) {
        return format!("TLS: {tls}");
    }
    causes(e)
        .last()
        .map_or_else(|| e.to_string(), |inner| inner.to_string())
}

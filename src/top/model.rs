//! The fleet as `vespa top` shows it: each worker's latest figures, the endpoint's totals,
//! and the last minute of both.
//!
//! A worker's metrics are counters and histograms since its start. Over the last `window`
//! (from the latest scrape back to one at least `window` older, or the oldest while there
//! is none), requests per second, 429s and errors are the counters' differences over the
//! time between the two scrapes, and time to first byte is the quantile of what was
//! observed in between (since start, before a second scrape). A window of a few seconds
//! smooths the bursts of a batching backend, whose answers end together. A counter that
//! went down means the worker restarted: what it counts now is all new. A worker that
//! cannot be reached keeps its row, marked, with the error; its history keeps a gap.
//!
//! Everything is computed from the polls' own [`Instant`]s, so a fixed sequence of polls
//! gives a fixed board (the tests rely on it).

use super::histogram::Histogram;
use super::parse::{Listed, Reading, StatusDoc};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the sparklines reach.
pub const HISTORY: Duration = Duration::from_secs(60);

/// What one poll of the fleet found.
#[derive(Debug, Clone)]
pub struct Poll {
    /// When the answers were in.
    pub at: Instant,
    /// The autoscaler's list: `None` when watching workers directly, else `Ok`, or why it
    /// could not be read (the workers of the last list it gave are polled meanwhile).
    pub autoscaler: Option<Result<(), String>>,
    /// One probe per worker, in display order.
    pub workers: Vec<Probe>,
}

/// One worker's answers in a poll.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The worker's base URL.
    pub url: String,
    /// What the autoscaler's list says of it, when watching an endpoint.
    pub listed: Option<Listed>,
    /// Its `/_vespa/metrics`, or why they could not be read.
    pub metrics: Result<Reading, String>,
    /// Its `/_vespa/status`, when readable (it needs the master token when one is set).
    pub status: Option<StatusDoc>,
}

/// The figures of one worker, or of the endpoint, at one poll. `None` is unknown: the
/// worker could not be reached, a rate before the second scrape, a percentile of nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Capacity, workload units per second.
    pub max_perf: Option<f64>,
    /// Workload of the requests queued and in flight.
    pub working_set: Option<f64>,
    /// Estimated wait for a new request, seconds.
    pub wait: Option<f64>,
    /// Requests being served by the backend.
    pub in_flight: Option<f64>,
    /// Requests waiting for a backend slot.
    pub queued: Option<f64>,
    /// Requests ended per second over the window.
    pub rps: Option<f64>,
    /// 429 answers per second over the window.
    pub rejected: Option<f64>,
    /// Backend errors and timeouts per second over the window.
    pub errors: Option<f64>,
    /// Time to first byte over the window, median, seconds.
    pub ttfb_p50: Option<f64>,
    /// Time to first byte over the window, 99th percentile, seconds.
    pub ttfb_p99: Option<f64>,
}

/// Figures now and over the last [`HISTORY`].
#[derive(Debug, Clone, Default)]
pub struct Track {
    /// The latest figures.
    pub latest: Figures,
    /// `(poll time, figures)`, oldest first, for the polls that had figures.
    pub history: VecDeque<(Instant, Figures)>,
}

impl Track {
    fn push(&mut self, at: Instant, figures: Figures) {
        self.latest = figures;
        self.history.push_back((at, figures));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > HISTORY)
        {
            self.history.pop_front();
        }
    }
}

/// One worker's row.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    /// Its base URL.
    pub url: String,
    /// Its id in the autoscaler's list.
    pub id: Option<u64>,
    /// Its lifecycle state, or `unreachable`.
    pub state: String,
    /// What is wrong: the fetch error, the worker's error, the autoscaler's view of it.
    pub problem: Option<String>,
    /// Its `MAX_WAIT_TIME`, when its status was readable.
    pub max_wait_time: Option<f64>,
    /// Its figures.
    pub track: Track,
    /// Scrapes of the last `window` and the one just before, for the differences.
    readings: VecDeque<(Instant, Reading)>,
    /// Time to first byte observed over the window, for the endpoint's percentiles.
    ttfb_window: Histogram,
}

impl WorkerRow {
    fn new(url: &str) -> WorkerRow {
        WorkerRow {
            url: url.to_string(),
            id: None,
            state: String::new(),
            problem: None,
            max_wait_time: None,
            track: Track::default(),
            readings: VecDeque::new(),
            ttfb_window: Histogram::default(),
        }
    }

    /// Whether the last poll read its metrics.
    pub fn reachable(&self) -> bool {
        self.state != UNREACHABLE
    }

    fn observe(&mut self, at: Instant, probe: Probe, window: Duration) {
        if let Some(l) = &probe.listed {
            self.id = l.id;
        }
        self.max_wait_time = probe
            .status
            .as_ref()
            .and_then(|s| s.max_wait_time)
            .or(self.max_wait_time);
        let listed_problem = probe.listed.as_ref().and_then(|l| match &l.error {
            Some(e) => Some(format!("autoscaler: {e}")),
            None if l.status.as_deref() == Some("stale") => {
                Some("autoscaler: stale (no recent report)".into())
            }
            None => None,
        });
        let reading = match probe.metrics {
            Ok(r) => r,
            Err(e) => {
                self.state = UNREACHABLE.into();
                self.problem = Some(e);
                self.track.latest = Figures::default();
                self.ttfb_window = Histogram::default();
                return;
            }
        };
        self.state = reading.state.clone().unwrap_or_else(|| "unknown".into());
        self.problem = probe.status.and_then(|s| s.error).or(listed_problem);
        let figures = self.figures(at, &reading, window);
        self.readings.push_back((at, reading));
        let since = at.checked_sub(window);
        while self.readings.len() >= 2 && since.is_some_and(|s| self.readings[1].0 <= s) {
            self.readings.pop_front();
        }
        self.track.push(at, figures);
    }

    /// The figures of `now` read at `at`, against the scrapes before it.
    fn figures(&mut self, at: Instant, now: &Reading, window: Duration) -> Figures {
        // The scrape the window starts from: the last one at least `window` old, else the
        // oldest kept.
        let since = at.checked_sub(window);
        let base = self
            .readings
            .iter()
            .rev()
            .find(|(t, _)| since.is_some_and(|s| *t <= s))
            .or(self.readings.front());
        let rate = |cur: f64, before: f64, secs: f64| {
            let delta = if cur >= before { cur - before } else { cur };
            delta / secs
        };
        let (rps, rejected, errors) = match base {
            Some((t, r)) if at > *t => {
                let secs = (at - *t).as_secs_f64();
                (
                    Some(rate(now.requests, r.requests, secs)),
                    Some(rate(now.rejected_429, r.rejected_429, secs)),
                    Some(rate(now.errors, r.errors, secs)),
                )
            }
            _ => (None, None, None),
        };
        self.ttfb_window = match base {
            Some((_, r)) => now.ttfb.since(&r.ttfb),
            None => now.ttfb.clone(),
        };
        Figures {
            max_perf: now.max_perf,
            working_set: now.working_set,
            wait: now.estimated_wait,
            in_flight: now.in_flight,
            queued: now.queued,
            rps,
            rejected,
            errors,
            ttfb_p50: self.ttfb_window.quantile(0.5),
            ttfb_p99: self.ttfb_window.quantile(0.99),
        }
    }
}

/// The state shown for a worker whose metrics could not be read.
pub const UNREACHABLE: &str = "unreachable";

/// What `vespa top` watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// An endpoint's workers, as its autoscaler lists them.
    Endpoint {
        /// The endpoint's name.
        name: String,
        /// The autoscaler's base URL.
        autoscaler: String,
    },
    /// Workers given by URL.
    Workers,
}

/// Everything the view shows.
#[derive(Debug, Clone)]
pub struct Board {
    /// What is watched.
    pub watched: Watched,
    /// Time between two polls.
    pub interval: Duration,
    /// The span rates and time-to-first-byte percentiles cover.
    pub window: Duration,
    /// The autoscaler's last answer, when watching an endpoint.
    pub autoscaler: Option<Result<(), String>>,
    /// One row per worker, in the poll's order.
    pub rows: Vec<WorkerRow>,
    /// The endpoint's totals: gauges and rates summed over the reachable workers, the
    /// wait as their total working set over their total capacity, time to first byte over
    /// all their requests.
    pub totals: Track,
    /// When the last poll was in; `None` before the first.
    pub at: Option<Instant>,
}

impl Board {
    /// An empty board.
    pub fn new(watched: Watched, interval: Duration, window: Duration) -> Board {
        Board {
            watched,
            interval,
            window,
            autoscaler: None,
            rows: Vec::new(),
            totals: Track::default(),
            at: None,
        }
    }

    /// Takes in one poll: rows of workers no longer listed go, new ones come.
    pub fn observe(&mut self, poll: Poll) {
        let mut rows = Vec::with_capacity(poll.workers.len());
        for probe in poll.workers {
            let mut row = match self.rows.iter().position(|r| r.url == probe.url) {
                Some(i) => self.rows.swap_remove(i),
                None => WorkerRow::new(&probe.url),
            };
            row.observe(poll.at, probe, self.window);
            rows.push(row);
        }
        self.rows = rows;
        self.autoscaler = poll.autoscaler;
        self.at = Some(poll.at);
        let totals = self.sum();
        self.totals.push(poll.at, totals);
    }

    /// Workers whose state is `ready`.
    pub fn ready(&self) -> usize {
        self.rows.iter().filter(|r| r.state == "ready").count()
    }

    fn sum(&self) -> Figures {
        let live: Vec<&WorkerRow> = self.rows.iter().filter(|r| r.reachable()).collect();
        let total = |pick: fn(&Figures) -> Option<f64>| {
            live.iter()
                .filter_map(|r| pick(&r.track.latest))
                .fold(None, |sum: Option<f64>, v| Some(sum.unwrap_or(0.0) + v))
        };
        let mut ttfb = Histogram::default();
        for r in &live {
            ttfb.add(&r.ttfb_window);
        }
        let (working_set, max_perf) = (total(|f| f.working_set), total(|f| f.max_perf));
        Figures {
            max_perf,
            working_set,
            wait: working_set
                .zip(max_perf)
                .filter(|(_, perf)| *perf > 0.0)
                .map(|(load, perf)| load / perf),
            in_flight: total(|f| f.in_flight),
            queued: total(|f| f.queued),
            rps: total(|f| f.rps),
            rejected: total(|f| f.rejected),
            errors: total(|f| f.errors),
            ttfb_p50: ttfb.quantile(0.5),
            ttfb_p99: ttfb.quantile(0.99),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A reading of a ready worker with `requests` ended so far, `r429` of them 429s,
    /// `errors` failed, and `fast` + `slow` first bytes at 20 ms and 400 ms.
    pub(crate) fn reading(requests: f64, r429: f64, errors: f64, fast: f64, slow: f64) -> Reading {
        let n = fast + slow;
        Reading {
            state: Some("ready".into()),
            max_perf: Some(3200.0),
            working_set: Some(1600.0),
            estimated_wait: Some(0.5),
            in_flight: Some(8.0),
            queued: Some(2.0),
            requests,
            rejected_429: r429,
            errors,
            ttfb: Histogram::new(vec![(0.025, fast), (0.5, n), (1.0, n), (f64::INFINITY, n)]),
        }
    }

    pub(crate) fn probe(url: &str, metrics: Result<Reading, String>) -> Probe {
        Probe {
            url: url.into(),
            listed: None,
            metrics,
            status: None,
        }
    }

    fn poll(at: Instant, workers: Vec<Probe>) -> Poll {
        Poll {
            at,
            autoscaler: None,
            workers,
        }
    }

    fn board() -> Board {
        Board::new(
            Watched::Workers,
            Duration::from_secs(1),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn rates_are_the_counter_differences_over_the_time_between_scrapes() {
        let (t0, mut b) = (Instant::now(), board());
        b.observe(poll(
            t0,
            vec![probe("w", Ok(reading(100.0, 5.0, 1.0, 0.0, 0.0)))],
        ));
        let first = b.rows[0].track.latest;
        assert_eq!(
            (first.rps, first.rejected),
            (None, None),
            "one scrape, no rate"
        );
        let t1 = t0 + Duration::from_secs(2);
        b.observe(poll(
            t1,
            vec![probe("w", Ok(reading(140.0, 9.0, 2.0, 0.0, 0.0)))],
        ));
        let f = b.rows[0].track.latest;
        assert_eq!(
            (f.rps, f.rejected, f.errors),
            (Some(20.0), Some(2.0), Some(0.5))
        );
        assert_eq!(
            (f.in_flight, f.queued, f.wait),
            (Some(8.0), Some(2.0), Some(0.5))
        );
    }

    #[test]
    fn a_restarted_worker_counts_from_zero_again() {
        let (t0, mut b) = (Instant::now(), board());
        b.observe(poll(
            t0,
            vec![probe("w", Ok(reading(1000.0, 0.0, 0.0, 0.0, 0.0)))],
        ));
        let t1 = t0 + Duration::from_secs(1);
        b.observe(poll(
            t1,
            vec![probe("w", Ok(reading(3.0, 0.0, 0.0, 0.0, 0.0)))],
        ));
        assert_eq!(b.rows[0].track.latest.rps, Some(3.0));
    }

    #[test]
    fn ttfb_percentiles_cover_the_window_not_the_workers_life() {
        let (t0, mut b) = (Instant::now(), board());
        // Until one scrape is a window old, the percentiles are of everything since start.
        b.observe(poll(
            t0,
            vec![probe("w", Ok(reading(0.0, 0.0, 0.0, 100.0, 0.0)))],
        ));
        assert_eq!(
            b.rows[0].track.latest.ttfb_p99.map(|s| s < 0.025),
            Some(true)
        );
        // Then only slow first bytes: 100 s later the fast ones are out of the window.
        let mut at = t0;
        for i in 1..=20 {
            at = t0 + Duration::from_secs(i * 5);
            b.observe(poll(
                at,
                vec![probe("w", Ok(reading(0.0, 0.0, 0.0, 100.0, i as f64)))],
            ));
        }
        let f = b.rows[0].track.latest;
        assert!(f.ttfb_p50.unwrap() > 0.025, "{f:?}");
        // The window keeps two scrapes 5 s apart, plus the one it starts from.
        assert_eq!(b.rows[0].readings.len(), 3);
        assert!(b.rows[0].readings[0].0 <= at - Duration::from_secs(10));
        // The sparkline's history is the last minute.
        assert_eq!(b.rows[0].track.history.len(), 13);
    }

    #[test]
    fn an_unreachable_worker_keeps_its_row_and_history_with_the_error() {
        let (t0, mut b) = (Instant::now(), board());
        b.observe(poll(
            t0,
            vec![probe("w", Ok(reading(0.0, 0.0, 0.0, 1.0, 0.0)))],
        ));
        let t1 = t0 + Duration::from_secs(1);
        b.observe(poll(t1, vec![probe("w", Err("connection refused".into()))]));
        let row = &b.rows[0];
        assert_eq!(row.state, UNREACHABLE);
        assert_eq!(row.problem.as_deref(), Some("connection refused"));
        assert_eq!(row.track.latest, Figures::default());
        assert_eq!(row.track.history.len(), 1);
        assert_eq!(b.totals.latest.in_flight, None, "nothing reachable to sum");
    }

    #[test]
    fn totals_sum_the_reachable_workers_and_the_wait_is_load_over_capacity() {
        let (t0, mut b) = (Instant::now(), board());
        let mut small = reading(0.0, 0.0, 0.0, 10.0, 0.0);
        small.max_perf = Some(800.0);
        small.working_set = Some(1600.0);
        b.observe(poll(
            t0,
            vec![
                probe("a", Ok(reading(0.0, 0.0, 0.0, 0.0, 10.0))),
                probe("b", Ok(small)),
                probe("c", Err("timed out".into())),
            ],
        ));
        let t = b.totals.latest;
        assert_eq!((t.max_perf, t.working_set), (Some(4000.0), Some(3200.0)));
        assert_eq!((t.in_flight, t.queued), (Some(16.0), Some(4.0)));
        assert_eq!(t.wait, Some(0.8));
        // Half the first bytes were fast, half slow: the median is on the boundary.
        assert!((t.ttfb_p50.unwrap() - 0.025).abs() < 1e-9, "{t:?}");
        assert_eq!(b.ready(), 2);
    }

    #[test]
    fn workers_no_longer_listed_leave_the_board() {
        let (t0, mut b) = (Instant::now(), board());
        let ok = || Ok(reading(0.0, 0.0, 0.0, 0.0, 0.0));
        b.observe(poll(t0, vec![probe("a", ok()), probe("b", ok())]));
        b.observe(poll(t0 + Duration::from_secs(1), vec![probe("b", ok())]));
        let urls: Vec<&str> = b.rows.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(urls, ["b"]);
        assert_eq!(b.rows[0].track.history.len(), 2, "b kept its history");
    }

    #[test]
    fn the_workers_error_and_the_autoscalers_view_show_as_its_problem() {
        let (t0, mut b) = (Instant::now(), board());
        let mut p = probe("a", Ok(reading(0.0, 0.0, 0.0, 0.0, 0.0)));
        p.listed = Some(Listed {
            id: Some(7),
            url: "a".into(),
            status: Some("stale".into()),
            error: None,
        });
        p.status = Some(StatusDoc {
            error: None,
            max_wait_time: Some(10.0),
        });
        b.observe(poll(t0, vec![p.clone()]));
        let row = &b.rows[0];
        assert_eq!((row.id, row.max_wait_time), (Some(7), Some(10.0)));
        assert_eq!(
            row.problem.as_deref(),
            Some("autoscaler: stale (no recent report)")
        );
        p.status = Some(StatusDoc {
            error: Some("backend down".into()),
            max_wait_time: None,
        });
        b.observe(poll(t0 + Duration::from_secs(1), vec![p]));
        assert_eq!(b.rows[0].problem.as_deref(), Some("backend down"));
        assert_eq!(b.rows[0].max_wait_time, Some(10.0), "kept");
    }
}

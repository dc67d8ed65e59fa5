//! The live view of `vespa load` on a terminal: progress, current and mean requests per
//! second, p50 / p99 so far, status and error counts and a latency histogram, redrawn in
//! place on stderr.
//!
//! A frame is a pure function of a [`Counts`] snapshot ([`render`]), so it is tested as a
//! string; [`View`] only samples the counters on a timer and hands the text to indicatif,
//! which redraws it in place (counting wrapped lines) and clears it at the end, so the
//! report that follows prints on a clean screen.

use super::histogram::{bar, fmt_ms};
use super::live::{Counts, Live};
use super::report::counts_line;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Width of a frame and of the report's histogram, in characters: fits an 80-column terminal.
pub const WIDTH: usize = 72;
/// Rows of a latency histogram.
pub const HISTOGRAM_ROWS: usize = 10;
/// "Now" in requests per second: completions over the last this long.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Default time between redraws (`--refresh`).
pub const DEFAULT_REFRESH: Duration = Duration::from_millis(250);
/// Shortest time between redraws (indicatif draws a terminal at most 20 times a second).
pub const MIN_REFRESH: Duration = Duration::from_millis(50);

/// What bounds the run: the progress bar fills towards the first bound reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// Requests to send.
    pub requests: Option<u64>,
    /// Time to send for.
    pub duration: Option<Duration>,
}

/// Requests per second over the last [`RATE_WINDOW`] (or since the start, when shorter),
/// from the running count of completions sampled at each redraw.
#[derive(Debug, Clone)]
pub struct RateWindow {
    window: Duration,
    points: VecDeque<(Duration, u64)>,
}

impl RateWindow {
    /// A window of `window`, starting from nothing done at time zero.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            points: VecDeque::from([(Duration::ZERO, 0)]),
        }
    }

    /// Adds `done` completions counted at `at` since the start; returns the rate over the
    /// shortest span back from `at` that covers the window.
    pub fn push(&mut self, at: Duration, done: u64) -> f64 {
        while self
            .points
            .get(1)
            .is_some_and(|(t, _)| at.saturating_sub(*t) >= self.window)
        {
            self.points.pop_front();
        }
        self.points.push_back((at, done));
        let (t0, d0) = self.points[0];
        let secs = at.saturating_sub(t0).as_secs_f64();
        if secs > 0.0 {
            done.saturating_sub(d0) as f64 / secs
        } else {
            0.0
        }
    }
}

/// Everything one frame shows.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// Time since the run started.
    pub elapsed: Duration,
    /// The run's bounds.
    pub goal: Goal,
    /// The counters.
    pub counts: &'a Counts,
    /// Completions per second over the last [`RATE_WINDOW`].
    pub rate_now: f64,
}

/// The text of one frame, lines at most `width` characters (the status and error lists
/// excepted, which the terminal wraps).
pub fn render(f: &Frame, width: usize) -> String {
    let c = f.counts;
    let secs = f.elapsed.as_secs_f64();
    let mut bounds = Vec::new();
    let mut fraction: f64 = 0.0;
    if let Some(n) = f.goal.requests {
        fraction = fraction.max(c.done as f64 / n.max(1) as f64);
        bounds.push(format!("{} / {n} requests", c.done));
    }
    if let Some(d) = f.goal.duration {
        let d = d.as_secs_f64();
        fraction = fraction.max(secs / d);
        // Past its duration a run sends nothing more and waits for what is in flight.
        let in_flight = c.started.saturating_sub(c.done);
        bounds.push(if secs >= d && in_flight > 0 {
            format!("{d:.1} s done, {in_flight} finishing")
        } else {
            format!("{:.1} / {d:.1} s", secs.min(d))
        });
    }
    let fraction = fraction.min(1.0);
    let tail = format!(" {:>3.0} %  {}", fraction * 100.0, bounds.join(", "));
    let bar_width = width.saturating_sub(12 + 2 + tail.chars().count()).max(10);
    let mut out = format!(
        "progress    │{:<bar_width$}│{tail}\n",
        bar(fraction, bar_width)
    );
    out.push_str(&format!(
        "rate        {:.1} req/s now, {:.1} mean, {} in flight, {secs:.1} s\n",
        f.rate_now,
        c.done as f64 / secs.max(1e-3),
        c.started.saturating_sub(c.done),
    ));
    let h = &c.latency;
    match (h.quantile(0.5), h.quantile(0.99)) {
        (Some(p50), Some(p99)) => out.push_str(&format!(
            "latency ms  p50 ~{}  p99 ~{}  ({} responses)\n",
            fmt_ms(p50),
            fmt_ms(p99),
            h.total()
        )),
        _ => out.push_str("latency ms  no response yet\n"),
    }
    let other = |n: u64| (n > 0).then(|| ("other".to_string(), n));
    let status = c.status.iter().map(|(k, n)| (k.to_string(), *n));
    out.push_str(&format!(
        "status      {}\n",
        counts_line(status.chain(other(c.other_status)))
    ));
    let errors = c.errors.iter().map(|(k, n)| (k.to_string(), *n));
    out.push_str(&format!(
        "errors      {}\n",
        counts_line(errors.chain(other(c.other_errors)))
    ));
    if h.total() > 0 {
        out.push_str("histogram   latency ms\n");
        out.push_str(&h.bars(HISTOGRAM_ROWS, width));
    }
    out
}

/// The live view while a run goes on: redrawn on stderr every `refresh` until
/// [`View::finish`], which clears it.
#[derive(Debug)]
pub struct View {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl View {
    /// Starts drawing `live` on stderr (which should be a terminal).
    pub fn start(live: Arc<Live>, goal: Goal, refresh: Duration) -> View {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut rate = RateWindow::new(RATE_WINDOW);
            let mut tick = tokio::time::interval(refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let counts = live.snapshot();
                let elapsed = t0.elapsed();
                let frame = Frame {
                    elapsed,
                    goal,
                    rate_now: rate.push(elapsed, counts.done),
                    counts: &counts,
                };
                bar.set_message(render(&frame, WIDTH));
            }
            bar.finish_and_clear();
        });
        View { stop, task }
    }

    /// Stops drawing and clears the view.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::load::histogram::Histogram;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn the_rate_counts_the_last_second_and_drops_to_zero_when_nothing_finishes() {
        let mut r = RateWindow::new(Duration::from_secs(1));
        // 10 completions every 250 ms: 40/s from the first sample on.
        for i in 1..=8u64 {
            assert_eq!(r.push(secs(0.25 * i as f64), 10 * i), 40.0, "tick {i}");
        }
        // Then twice as fast: the window moves over to the new pace within a second.
        assert_eq!(r.push(secs(2.25), 100), 50.0);
        assert_eq!(r.push(secs(2.5), 120), 60.0);
        assert_eq!(r.push(secs(2.75), 140), 70.0);
        assert_eq!(r.push(secs(3.0), 160), 80.0);
        // A stall: nothing finishes for a second.
        assert_eq!(r.push(secs(3.5), 160), 40.0);
        assert_eq!(r.push(secs(4.0), 160), 0.0);
        assert_eq!(RateWindow::new(RATE_WINDOW).push(Duration::ZERO, 0), 0.0);
    }

    fn counts() -> Counts {
        let ms = Duration::from_millis;
        let mut latencies = vec![ms(100); 300];
        latencies.extend([ms(150); 90]);
        latencies.extend([ms(400); 2]);
        Counts {
            started: 420,
            done: 412,
            status: vec![(200, 392), (429, 10)],
            other_status: 0,
            errors: vec![("connect", 4), ("timeout", 6)],
            other_errors: 0,
            latency: Histogram::of(&latencies),
        }
    }

    #[test]
    fn a_frame_shows_progress_rates_percentiles_counts_and_the_histogram() {
        let counts = counts();
        let frame = Frame {
            elapsed: secs(3.4),
            goal: Goal {
                requests: Some(1000),
                duration: None,
            },
            counts: &counts,
            rate_now: 128.44,
        };
        let text = render(&frame, WIDTH);
        let expected = [
            "progress    │████████████▊                  │  41 %  412 / 1000 requests",
            "rate        128.4 req/s now, 121.2 mean, 8 in flight, 3.4 s",
            "latency ms  p50 ~102  p99 ~156  (392 responses)",
            "status      200: 392, 429: 10",
            "errors      connect: 4, timeout: 6",
        ];
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..5], expected, "{text}");
        // Then the histogram of 100 ms (300), 150 ms (90) and 400 ms (2).
        let bars = text.splitn(6, '\n').last().unwrap();
        assert!(bars.starts_with("histogram   latency ms\n"), "{text}");
        let rows: Vec<&str> = bars
            .lines()
            .skip(1)
            .map(|l| l.split('│').next().unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                "   98.3 – 106    ",
                "    147 – 164    ",
                "    393 – 426    "
            ]
        );
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    }

    #[test]
    fn a_timed_run_fills_the_bar_with_time_then_waits_for_what_is_in_flight() {
        let counts = Counts {
            started: 4,
            other_status: 3,
            ..Counts::default()
        };
        let frame = Frame {
            elapsed: secs(45.0),
            goal: Goal {
                requests: None,
                duration: Some(secs(30.0)),
            },
            counts: &counts,
            rate_now: 0.0,
        };
        let text = render(&frame, 60);
        let full = "█".repeat(60 - 12 - 2 - " 100 %  30.0 s done, 4 finishing".len());
        assert_eq!(
            text,
            format!(
                "progress    │{full}│ 100 %  30.0 s done, 4 finishing\n\
                 rate        0.0 req/s now, 0.0 mean, 4 in flight, 45.0 s\n\
                 latency ms  no response yet\n\
                 status      other: 3\n\
                 errors      none\n"
            )
        );
        // Before the end, time against the duration.
        let running = render(
            &Frame {
                elapsed: secs(12.0),
                ..frame.clone()
            },
            60,
        );
        assert!(
            running
                .lines()
                .next()
                .unwrap()
                .ends_with("  40 %  12.0 / 30.0 s"),
            "{running}"
        );
    }
}

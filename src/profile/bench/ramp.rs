//! The windowed ramp: closed-loop levels of doubling concurrency, each measured over a fixed
//! window, until a level no longer beats the best by 5 % or the bound is reached.
//!
//! **Streamed counting** (a profile with `[benchmark.stream]`): requests carry over from one
//! level to the next (a level adds requests to reach its concurrency), and the work is
//! counted as it arrives. A level first lets its new requests start: its window opens once
//! each of them has counted its first unit (their prompts are prefilled), or after half a
//! window when some cannot start (the backend's batch is full and they queue). The level's
//! throughput is the units counted within the window over the window.
//!
//! **Whole answers** (no stream): each level starts `c` fresh requests and keeps `c` in
//! flight; it ends once its window has passed and at least one answer has completed. The
//! throughput is the completed workload over the time of the last completion counted, so a
//! batch finishing as one wave is counted whole and the tail of a level does not dilute it.

use super::{
    Bench, BenchEvent, Level, MIN_GAIN, PROGRESS_EVERY, Progress, Run, request::RequestError,
};
use crate::profile::StreamCount;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A level must be able to measure at least this share of its window to start, and a
/// window cut shorter than this by the bound is not counted.
const MIN_WINDOW_SHARE: f64 = 0.25;

/// How long a failing request's loop waits before its next request, so a backend that
/// refuses everything is not sent a storm.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What a request loop reports.
struct Msg {
    task: usize,
    at: Instant,
    kind: Kind,
}

enum Kind {
    /// Work counted.
    Units(f64),
    /// A request completed.
    Done,
    /// A request failed.
    Failed(String),
}

pub(super) struct Ramp<'a> {
    bench: &'a Bench,
    stream: Option<&'a StreamCount>,
    deadline: Instant,
    on_event: &'a (dyn Fn(&BenchEvent) + Send + Sync),
    window: Duration,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    loops: JoinSet<()>,
    /// Per request loop: has it counted work yet.
    started: Vec<bool>,
    run: Run,
}

impl<'a> Ramp<'a> {
    pub(super) fn new(
        bench: &'a Bench,
        stream: Option<&'a StreamCount>,
        deadline: Instant,
        on_event: &'a (dyn Fn(&BenchEvent) + Send + Sync),
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            bench,
            stream,
            deadline,
            on_event,
            window: bench.profile.benchmark.window,
            tx,
            rx,
            loops: JoinSet::new(),
            started: Vec::new(),
            run: Run::default(),
        }
    }

    pub(super) async fn run(mut self) -> Run {
        let settings = &self.bench.profile.benchmark;
        let mut c = settings.concurrency;
        let mut best = 0.0_f64;
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.as_secs_f64() < self.window.as_secs_f64() * MIN_WINDOW_SHARE {
                self.run.bounded = true;
                break;
            }
            (self.on_event)(&BenchEvent::Started {
                concurrency: c,
                window_secs: self.window.as_secs_f64(),
                eta_secs: self.eta(c, self.level_time()),
            });
            let level = match self.stream {
                Some(_) => self.streamed_level(c).await,
                None => self.whole_level(c).await,
            };
            (self.on_event)(&BenchEvent::Finished(level.clone()));
            let (t, cut) = (level.throughput, level.cut);
            self.run.levels.push(level);
            if cut {
                self.run.bounded = true;
                break;
            }
            if t <= 0.0 || t < best * MIN_GAIN || c >= settings.max_concurrency {
                break;
            }
            best = best.max(t);
            c = (c * 2).min(settings.max_concurrency);
        }
        // Requests still in flight are dropped: their connections close, the backend stops.
        self.loops.abort_all();
        self.run
    }

    /// The longest a level takes: a settling phase of half a window (streamed) and the
    /// window.
    fn level_time(&self) -> Duration {
        match self.stream {
            Some(_) => self.window + self.window / 2,
            None => self.window,
        }
    }

    /// Upper bound on the seconds left: this level's `left`, then every level up to
    /// `max_concurrency`, within the bound.
    fn eta(&self, c: usize, left: Duration) -> f64 {
        let max = self.bench.profile.benchmark.max_concurrency;
        let (mut x, mut more) = (c, 0u32);
        while x < max {
            x = (x * 2).min(max);
            more += 1;
        }
        let all = left + self.level_time() * more;
        all.min(self.deadline.saturating_duration_since(Instant::now()))
            .as_secs_f64()
    }

    /// Starts request loop `task`, reporting to the current channel.
    fn spawn(&mut self, task: usize) {
        let (me, stream, tx) = (self.bench.clone(), self.stream.cloned(), self.tx.clone());
        self.loops.spawn(async move {
            loop {
                let mut report = |units: f64| {
                    let at = Instant::now();
                    tx.send(Msg {
                        task,
                        at,
                        kind: Kind::Units(units),
                    })
                    .is_ok()
                };
                let result = me.request(stream.as_ref(), &mut report).await;
                let failed = result.is_err();
                let kind = match result {
                    Ok(()) => Kind::Done,
                    Err(RequestError::Status(_, e) | RequestError::Other(e)) => Kind::Failed(e),
                };
                let msg = Msg {
                    task,
                    at: Instant::now(),
                    kind,
                };
                if tx.send(msg).is_err() {
                    return;
                }
                if failed {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        });
    }

    fn progress(&self, p: Progress) {
        (self.on_event)(&BenchEvent::Progress(p));
    }

    /// A streamed level: grows the loops to `c`, settles, then counts units in the window.
    async fn streamed_level(&mut self, c: usize) -> Level {
        let level_start = Instant::now();
        let new_from = self.started.len();
        for task in new_from..c {
            self.started.push(false);
            self.spawn(task);
        }
        let mut waiting = self.started[new_from..].iter().filter(|s| !**s).count();
        let mut window_start = (waiting == 0).then_some(level_start);
        let (deadline, window) = (self.deadline, self.window);
        let phase_end = |ws: Option<Instant>| match ws {
            None => (level_start + window / 2).min(deadline),
            Some(ws) => (ws + window).min(deadline),
        };
        let sleep = tokio::time::sleep_until(phase_end(window_start));
        tokio::pin!(sleep);
        let mut tick = ticker(level_start);
        let (mut units, mut requests, mut errors) = (0.0, 0, 0);
        let mut cut = false;
        loop {
            tokio::select! {
                // The phase ends on time however fast work arrives.
                biased;
                () = &mut sleep => {
                    let now = sleep.deadline();
                    if now >= deadline && window_start.is_none_or(|ws| ws + window > now) {
                        cut = true;
                    }
                    if window_start.is_some() || cut {
                        break;
                    }
                    window_start = Some(now);
                    sleep.as_mut().reset(phase_end(window_start));
                }
                m = self.rx.recv() => {
                    let Some(m) = m else { break };
                    if let Kind::Units(_) = m.kind
                        && m.task >= new_from
                        && !std::mem::replace(&mut self.started[m.task], true)
                    {
                        waiting -= 1;
                        if waiting == 0 && window_start.is_none() {
                            window_start = Some(m.at);
                            sleep.as_mut().reset(phase_end(window_start));
                        }
                    }
                    let Some(ws) = window_start else {
                        if let Kind::Failed(e) = m.kind {
                            errors += 1;
                            self.run.last_error = Some(e);
                        }
                        continue;
                    };
                    let window = ws..sleep.deadline();
                    count(m, &window, &mut units, &mut requests, &mut errors, &mut self.run);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let elapsed = window_start.map_or(0.0, |ws| now.saturating_duration_since(ws).as_secs_f64());
                    let left = match window_start {
                        Some(_) => sleep.deadline().saturating_duration_since(now),
                        None => sleep.deadline().saturating_duration_since(now) + self.window,
                    };
                    self.progress(Progress {
                        concurrency: c,
                        settling: window_start.is_none(),
                        elapsed_secs: elapsed,
                        window_secs: self.window.as_secs_f64(),
                        throughput: if elapsed > 0.0 { units / elapsed } else { 0.0 },
                        eta_secs: self.eta(c, left),
                    });
                }
            }
        }
        let window_end = sleep.deadline();
        // Work reported within the window but still queued.
        while let Ok(m) = self.rx.try_recv() {
            if let Some(ws) = window_start {
                count(
                    m,
                    &(ws..window_end),
                    &mut units,
                    &mut requests,
                    &mut errors,
                    &mut self.run,
                );
            }
        }
        let measured = window_start.map_or(Duration::ZERO, |ws| {
            window_end.saturating_duration_since(ws)
        });
        let throughput = if measured.as_secs_f64() >= self.window.as_secs_f64() * MIN_WINDOW_SHARE {
            units / measured.as_secs_f64()
        } else {
            0.0
        };
        Level {
            concurrency: c,
            throughput,
            requests,
            errors,
            window_secs: measured.as_secs_f64(),
            secs: level_start.elapsed().as_secs_f64(),
            cut,
        }
    }

    /// A whole-answer level: `c` fresh requests in flight; ends once the window has passed
    /// and an answer has completed (the wave it belongs to included).
    async fn whole_level(&mut self, c: usize) -> Level {
        // Fresh loops on a fresh channel: the previous level's loops stop when they next
        // report.
        self.loops.abort_all();
        (self.tx, self.rx) = mpsc::unbounded_channel();
        self.started.clear();
        let level_start = Instant::now();
        for task in 0..c {
            self.started.push(false);
            self.spawn(task);
        }
        let window_end = (level_start + self.window).min(self.deadline);
        let mut done: Vec<(Instant, f64)> = Vec::new();
        let (mut errors, mut cut) = (0, false);
        let mut tick = ticker(level_start);
        // Until the window has passed and something completed; then the completing wave.
        let mut close: Option<Instant> = None;
        let sleep = tokio::time::sleep_until(window_end);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                () = &mut sleep => {
                    let now = sleep.deadline();
                    if close.is_some() {
                        break;
                    }
                    if done.is_empty() {
                        if errors >= c {
                            break;
                        }
                        if now >= self.deadline {
                            cut = true;
                            break;
                        }
                        // Nothing completed yet: wait for the first answer, within the bound.
                        sleep.as_mut().reset(self.deadline);
                        continue;
                    }
                    let end = self.wave_end(level_start, &done);
                    close = Some(end);
                    sleep.as_mut().reset(end);
                }
                m = self.rx.recv() => {
                    let Some(m) = m else { break };
                    match m.kind {
                        Kind::Units(u) if close.is_none_or(|end| m.at <= end) => done.push((m.at, u)),
                        Kind::Units(_) | Kind::Done => {}
                        Kind::Failed(e) => {
                            errors += 1;
                            self.run.last_error = Some(e);
                        }
                    }
                    let over = Instant::now() >= window_end;
                    if over && done.is_empty() && errors >= c {
                        // Every request fails: nothing will complete.
                        break;
                    }
                    if close.is_none() && over && !done.is_empty() {
                        let end = self.wave_end(level_start, &done);
                        close = Some(end);
                        sleep.as_mut().reset(end);
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let elapsed = now.saturating_duration_since(level_start);
                    let throughput = rate(level_start, &done);
                    let left = window_end.saturating_duration_since(now);
                    self.progress(Progress {
                        concurrency: c,
                        settling: false,
                        elapsed_secs: elapsed.as_secs_f64(),
                        window_secs: self.window.as_secs_f64(),
                        throughput,
                        eta_secs: self.eta(c, left),
                    });
                }
            }
        }
        if let Some(end) = close {
            done.retain(|(at, _)| *at <= end);
        }
        let span = done
            .iter()
            .map(|(at, _)| at.saturating_duration_since(level_start))
            .max()
            .unwrap_or_default();
        Level {
            concurrency: c,
            throughput: rate(level_start, &done),
            requests: done.len(),
            errors,
            window_secs: span.as_secs_f64(),
            secs: level_start.elapsed().as_secs_f64(),
            cut,
        }
    }

    /// When the wave of the last completion so far ends: completions that land together
    /// with it (a batch finishing at once) belong to the same instant.
    fn wave_end(&self, level_start: Instant, done: &[(Instant, f64)]) -> Instant {
        let last = done.iter().map(|(at, _)| *at).max().unwrap_or(level_start);
        let grace =
            (last.saturating_duration_since(level_start) / 50).max(Duration::from_millis(20));
        (last + grace).min(self.deadline)
    }
}

/// Counts one message of a streamed level measured over `window`.
fn count(
    m: Msg,
    window: &std::ops::Range<Instant>,
    units: &mut f64,
    requests: &mut usize,
    errors: &mut usize,
    run: &mut Run,
) {
    match m.kind {
        Kind::Units(u) if window.contains(&m.at) => *units += u,
        Kind::Done if window.contains(&m.at) => *requests += 1,
        Kind::Failed(e) => {
            *errors += 1;
            run.last_error = Some(e);
        }
        Kind::Units(_) | Kind::Done => {}
    }
}

/// A progress ticker from `start`, not catching up missed ticks.
fn ticker(start: Instant) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// Completed workload over the time of the last completion.
fn rate(level_start: Instant, done: &[(Instant, f64)]) -> f64 {
    let span = done
        .iter()
        .map(|(at, _)| at.saturating_duration_since(level_start))
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    if span > 0.0 {
        done.iter().map(|(_, u)| u).sum::<f64>() / span
    } else {
        0.0
    }
}

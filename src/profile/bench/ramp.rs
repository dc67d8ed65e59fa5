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
    Bench, BenchEvent, Level, MIN_GAIN, PROGRESS_EVERY, Progress, Run, Streamed,
    request::RequestError,
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
    /// A request's first work arrived this long after it was sent.
    Started(Duration),
    /// Work counted.
    Units(f64),
    /// A request completed with this much work in all.
    Done(f64),
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
    /// Streamed: the time to first unit of a request that did not queue (the shortest of
    /// the first level's), taken as the backend's time to prefill one prompt.
    prefill: Option<Duration>,
    /// Streamed: work of the answers completed so far (sum, count).
    answers: (f64, usize),
    /// Streamed: the work one request asks for by the profile's request rule.
    nominal_answer: Option<f64>,
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
            prefill: None,
            answers: (0.0, 0),
            nominal_answer: bench.profile.request.body.as_ref().and_then(|t| {
                let payload = t.render(&bench.ctx);
                bench.profile.workload.request.as_ref()?.eval(&payload)
            }),
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
                let sent = Instant::now();
                let (mut first, mut total) = (true, 0.0);
                let mut report = |units: f64| {
                    let at = Instant::now();
                    if std::mem::take(&mut first) {
                        let kind = Kind::Started(at.saturating_duration_since(sent));
                        if tx.send(Msg { task, at, kind }).is_err() {
                            return false;
                        }
                    }
                    total += units;
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
                    Ok(()) => Kind::Done(total),
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
        let mut tally = Tally::new(c);
        let mut first_unit: Option<Duration> = None;
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
                    match m.kind {
                        Kind::Started(ttft) => {
                            first_unit = Some(first_unit.map_or(ttft, |f| f.min(ttft)));
                        }
                        Kind::Units(_) if m.task >= new_from
                            && !std::mem::replace(&mut self.started[m.task], true) =>
                        {
                            waiting -= 1;
                            if waiting == 0 && window_start.is_none() {
                                window_start = Some(m.at);
                                sleep.as_mut().reset(phase_end(window_start));
                            }
                        }
                        _ => {}
                    }
                    let window = window_start.map(|ws| ws..sleep.deadline());
                    let prefill = self.prefill.or(first_unit).unwrap_or_default().as_secs_f64();
                    tally.add(m, window.as_ref(), prefill, &mut self.answers, &mut self.run);
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
                        throughput: if elapsed > 0.0 { tally.units / elapsed } else { 0.0 },
                        eta_secs: self.eta(c, left),
                    });
                }
            }
        }
        let window_end = sleep.deadline();
        // Work reported within the window but still queued.
        while let Ok(m) = self.rx.try_recv() {
            let window = window_start.map(|ws| ws..window_end);
            let prefill = self
                .prefill
                .or(first_unit)
                .unwrap_or_default()
                .as_secs_f64();
            tally.add(
                m,
                window.as_ref(),
                prefill,
                &mut self.answers,
                &mut self.run,
            );
        }
        if self.prefill.is_none() {
            self.prefill = first_unit;
        }
        let measured = window_start.map_or(Duration::ZERO, |ws| {
            window_end.saturating_duration_since(ws)
        });
        let secs = if measured.as_secs_f64() >= self.window.as_secs_f64() * MIN_WINDOW_SHARE {
            measured.as_secs_f64()
        } else {
            0.0
        };
        let answer = match self.answers {
            (sum, n) if n > 0 && sum > 0.0 => Some(sum / n as f64),
            _ => self.nominal_answer,
        };
        let prefill = self.prefill.unwrap_or_default().as_secs_f64();
        Level {
            concurrency: c,
            throughput: with_prefill(&tally, secs, prefill, answer),
            requests: tally.requests,
            errors: tally.errors,
            window_secs: measured.as_secs_f64(),
            secs: level_start.elapsed().as_secs_f64(),
            cut,
            streamed: Some(Streamed {
                decode_throughput: if secs > 0.0 { tally.units / secs } else { 0.0 },
                streams: tally.streams(),
                first_units: tally.first_units,
                prefill_secs: prefill,
                answer_units: answer.unwrap_or(0.0),
            }),
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
                        Kind::Units(_) | Kind::Done(_) | Kind::Started(_) => {}
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
            streamed: None,
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

/// What a streamed level counted.
struct Tally {
    units: f64,
    /// Requests whose first unit arrived within the window.
    first_units: usize,
    /// Seconds of those requests' prefill that lay within the window.
    prefill_seen: f64,
    requests: usize,
    errors: usize,
    /// Per request loop: did it produce work within the window.
    active: Vec<bool>,
}

impl Tally {
    fn new(loops: usize) -> Self {
        Self {
            units: 0.0,
            first_units: 0,
            prefill_seen: 0.0,
            requests: 0,
            errors: 0,
            active: vec![false; loops],
        }
    }

    /// Counts one message; `window` is `None` while the level settles.
    fn add(
        &mut self,
        m: Msg,
        window: Option<&std::ops::Range<Instant>>,
        prefill: f64,
        answers: &mut (f64, usize),
        run: &mut Run,
    ) {
        let inside = window.is_some_and(|w| w.contains(&m.at));
        match m.kind {
            Kind::Units(u) if inside => {
                self.units += u;
                if let Some(a) = self.active.get_mut(m.task) {
                    *a = true;
                }
            }
            Kind::Done(total) => {
                answers.0 += total;
                answers.1 += 1;
                if inside {
                    self.requests += 1;
                }
            }
            Kind::Started(ttft) if inside => {
                self.first_units += 1;
                // The prefill ended at the first unit; a queued request's wait is not
                // prefill, so at most one prefill's time counts.
                let start = window.map_or(m.at, |w| w.start);
                let in_window = m.at.saturating_duration_since(start).min(ttft);
                self.prefill_seen += in_window.as_secs_f64().min(prefill);
            }
            Kind::Failed(e) => {
                self.errors += 1;
                run.last_error = Some(e);
            }
            Kind::Units(_) | Kind::Started(_) => {}
        }
    }

    /// Requests that produced work within the window: the backend's running batch.
    fn streams(&self) -> usize {
        self.active.iter().filter(|a| **a).count()
    }
}

/// A streamed level's throughput with prefill counted against it.
///
/// In steady state every answer of `answer` units also costs its stream `prefill` seconds
/// before its first unit, during which that stream produces nothing. A window shorter than
/// an answer sees less prefill than the `units / answer` answers it counted work of: the
/// prefill time it did not see is added to the streams' time, shared over `streams`.
fn with_prefill(tally: &Tally, secs: f64, prefill: f64, answer: Option<f64>) -> f64 {
    let streams = tally.streams();
    if secs <= 0.0 {
        return 0.0;
    }
    let Some(answer) = answer.filter(|a| *a > 0.0 && streams > 0) else {
        return tally.units / secs;
    };
    let unseen = (tally.units / answer * prefill - tally.prefill_seen).max(0.0);
    tally.units / (secs + unseen / streams as f64)
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

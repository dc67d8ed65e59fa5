//! `vespa top` off a terminal: plain lines to log, one per worker per poll, each
//! `timestamp key=value …` like the access log, after one line of the endpoint's totals
//! when an endpoint is watched.
//!
//! Figures are plain numbers (no unit suffix, no thousands, `-` when unknown) with the unit
//! in the key: `wait_s`, `req_s` (per second), `ttfb_p50_ms`. Text that may hold spaces
//! (`problem`) is quoted.

use super::model::{Board, Figures, Watched};
use std::fmt::Write;
use std::time::SystemTime;

/// The lines of one poll of `board`, stamped `now`.
pub fn lines(board: &Board, now: SystemTime) -> Vec<String> {
    let stamp = crate::logging::timestamp(now);
    let mut out = Vec::with_capacity(board.rows.len() + 1);
    if let Watched::Endpoint { name, .. } = &board.watched {
        let mut line = format!(
            "{stamp} endpoint={name} workers={} ready={}",
            board.rows.len(),
            board.ready()
        );
        figures(&mut line, &board.totals.latest);
        if let Some(Err(e)) = &board.autoscaler {
            let _ = write!(line, " problem={:?}", format!("autoscaler: {e}"));
        }
        out.push(line);
    }
    for w in &board.rows {
        let mut line = format!("{stamp} worker={}", w.url);
        if let Some(id) = w.id {
            let _ = write!(line, " id={id}");
        }
        let _ = write!(line, " state={}", w.state);
        figures(&mut line, &w.track.latest);
        if let Some(p) = &w.problem {
            let _ = write!(line, " problem={p:?}");
        }
        out.push(line);
    }
    out
}

fn figures(line: &mut String, f: &Figures) {
    let ms = |v: Option<f64>| v.map(|s| s * 1e3);
    for (key, v) in [
        ("max_perf", f.max_perf),
        ("working_set", f.working_set),
        ("wait_s", f.wait),
        ("in_flight", f.in_flight),
        ("queued", f.queued),
        ("req_s", f.rps),
        ("429_s", f.rejected),
        ("err_s", f.errors),
        ("ttfb_p50_ms", ms(f.ttfb_p50)),
        ("ttfb_p99_ms", ms(f.ttfb_p99)),
    ] {
        let _ = write!(line, " {key}={}", value(v));
    }
}

/// A figure as a plain number, to three decimals without trailing zeros; `-` unknown.
fn value(v: Option<f64>) -> String {
    match v.filter(|v| v.is_finite()) {
        None => "-".into(),
        Some(v) => {
            let s = format!("{v:.3}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            if s == "-0" { "0".into() } else { s.into() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{probe, reading};
    use crate::top::model::{Poll, Watched};
    use crate::top::parse::Listed;
    use std::time::{Duration, Instant, UNIX_EPOCH};

    #[test]
    fn one_line_for_the_endpoint_then_one_per_worker() {
        let watched = Watched::Endpoint {
            name: "demo".into(),
            autoscaler: "http://127.0.0.1:8081".into(),
        };
        let mut board = Board::new(watched, Duration::from_secs(1), Duration::from_secs(10));
        let t0 = Instant::now();
        for (i, n) in [(0u64, 0.0), (2, 1.0)] {
            let mut listed = probe(
                "http://127.0.0.1:4001",
                Ok(reading(30.0 * n, n, 0.0, 9.0 * n, n)),
            );
            listed.listed = Some(Listed {
                id: Some(1),
                ..Listed::default()
            });
            board.observe(Poll {
                at: t0 + Duration::from_secs(i),
                autoscaler: Some(if i == 0 {
                    Ok(())
                } else {
                    Err("timed out after 2 s".into())
                }),
                workers: vec![
                    listed,
                    probe("http://127.0.0.1:4002", Err("connection refused".into())),
                ],
            });
        }
        let now = UNIX_EPOCH + Duration::from_micros(1_796_069_641_402_916);
        insta::assert_snapshot!(lines(&board, now).join("\n"), @r#"
        2026-11-30T20:14:01.402916Z endpoint=demo workers=2 ready=1 max_perf=3200 working_set=1600 wait_s=0.5 in_flight=8 queued=2 req_s=15 429_s=0.5 err_s=0 ttfb_p50_ms=13.889 ttfb_p99_ms=452.5 problem="autoscaler: timed out after 2 s"
        2026-11-30T20:14:01.402916Z worker=http://127.0.0.1:4001 id=1 state=ready max_perf=3200 working_set=1600 wait_s=0.5 in_flight=8 queued=2 req_s=15 429_s=0.5 err_s=0 ttfb_p50_ms=13.889 ttfb_p99_ms=452.5
        2026-11-30T20:14:01.402916Z worker=http://127.0.0.1:4002 state=unreachable max_perf=- working_set=- wait_s=- in_flight=- queued=- req_s=- 429_s=- err_s=- ttfb_p50_ms=- ttfb_p99_ms=- problem="connection refused"
        "#);
    }

    #[test]
    fn watching_workers_prints_no_endpoint_line() {
        let mut board = Board::new(
            Watched::Workers,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        board.observe(Poll {
            at: Instant::now(),
            autoscaler: None,
            workers: vec![probe("http://w", Ok(reading(0.0, 0.0, 0.0, 0.0, 0.0)))],
        });
        let lines = lines(&board, UNIX_EPOCH);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("1970-01-01T00:00:00.000000Z worker=http://w state=ready "),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains(" req_s=- "),
            "no rate from one scrape: {}",
            lines[0]
        );
    }

    #[test]
    fn values_are_plain_numbers() {
        assert_eq!(value(Some(12.0)), "12");
        assert_eq!(value(Some(0.5)), "0.5");
        assert_eq!(value(Some(1.0 / 3.0)), "0.333");
        assert_eq!(value(Some(-0.0001)), "0");
        assert_eq!(value(Some(f64::NAN)), "-");
        assert_eq!(value(None), "-");
    }
}

//! One-line sparklines of the last minute, as text, so they fit in a table cell.
//!
//! The minute is cut into as many equal spans as there are characters (at most one span
//! per poll interval, so each can hold a poll), each span shows the mean of its polls,
//! scaled to the largest span, with the lowest bar for zero and a blank where the worker
//! gave nothing (before the first poll, or while it was unreachable). The newest span is on
//! the right.

use super::model::{Figures, HISTORY};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of `pick` over `history` for the [`HISTORY`] before `now`, `width`
/// characters wide, with polls every `interval`.
pub fn sparkline(
    history: &VecDeque<(Instant, Figures)>,
    now: Instant,
    pick: fn(&Figures) -> Option<f64>,
    width: usize,
    interval: Duration,
) -> String {
    let per_interval = (HISTORY.as_secs_f64() / interval.as_secs_f64().max(1e-3)).floor();
    let spans = width.min(per_interval.max(1.0) as usize);
    if spans == 0 {
        return String::new();
    }
    let span = HISTORY.as_secs_f64() / spans as f64;
    let mut sums = vec![(0.0, 0u32); spans];
    for (at, figures) in history {
        let (Some(v), Some(age)) = (pick(figures), now.checked_duration_since(*at)) else {
            continue;
        };
        if age > HISTORY || !v.is_finite() {
            continue;
        }
        let back = (age.as_secs_f64() / span) as usize;
        let i = spans - 1 - back.min(spans - 1);
        sums[i].0 += v;
        sums[i].1 += 1;
    }
    let means: Vec<Option<f64>> = sums
        .iter()
        .map(|&(sum, n)| (n > 0).then(|| sum / f64::from(n)))
        .collect();
    let max = means.iter().flatten().fold(0.0_f64, |m, v| m.max(*v));
    let mut line = " ".repeat(width - spans);
    for mean in means {
        line.push(match mean {
            None => ' ',
            Some(_) if max <= 0.0 => BARS[0],
            Some(v) => BARS[((v / max * 7.0).round() as usize).min(7)],
        });
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(now: Instant, values: &[(u64, Option<f64>)]) -> VecDeque<(Instant, Figures)> {
        values
            .iter()
            .map(|&(age, rps)| {
                let f = Figures {
                    rps,
                    ..Figures::default()
                };
                (now - Duration::from_secs(age), f)
            })
            .collect()
    }

    #[test]
    fn the_newest_value_is_on_the_right_scaled_to_the_largest() {
        let now = Instant::now() + HISTORY;
        let h = history(now, &[(59, Some(0.0)), (30, Some(5.0)), (0, Some(10.0))]);
        let line = sparkline(&h, now, |f| f.rps, 4, Duration::from_secs(1));
        assert_eq!(line, "▁▅ █");
    }

    #[test]
    fn gaps_are_blank_and_all_zero_is_the_lowest_bar() {
        let now = Instant::now() + HISTORY;
        let h = history(now, &[(40, Some(0.0)), (0, None)]);
        assert_eq!(
            sparkline(&h, now, |f| f.rps, 3, Duration::from_secs(1)),
            "▁  "
        );
    }

    #[test]
    fn no_more_spans_than_polls_in_the_minute() {
        let now = Instant::now() + HISTORY;
        let h = history(now, &[(0, Some(1.0))]);
        // Polls every 20 s: three spans, right-aligned in eight characters.
        let line = sparkline(&h, now, |f| f.rps, 8, Duration::from_secs(20));
        assert_eq!(line.chars().count(), 8);
        assert_eq!(line, "       █");
    }
}

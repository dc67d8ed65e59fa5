//! The figure columns of `vespa top`'s table: what each shows and how wide it is, which
//! of them fit a terminal of a given size, and the compact number formats they use.
//!
//! A narrow terminal drops whole columns, least useful first (each column has a rank),
//! rather than squeezing every one until none can be read; a short terminal drops the
//! sparkline under each figure before it drops workers.

use super::model::{Board, Figures, WorkerRow};
use ratatui::layout::Rect;

/// One figure column: heading, width, which figure, and its rank when the terminal is
/// too narrow for all (the lowest ranks stay).
pub struct Column {
    pub title: &'static str,
    pub width: u16,
    rank: u8,
    pub value: fn(&Figures) -> String,
    pub spark: fn(&Figures) -> Option<f64>,
}

pub const COLUMNS: [Column; 9] = [
    Column {
        title: "max_perf",
        width: 8,
        rank: 8,
        value: |f| number(f.max_perf),
        spark: |f| f.max_perf,
    },
    Column {
        title: "working set",
        width: 11,
        rank: 9,
        value: |f| number(f.working_set),
        spark: |f| f.working_set,
    },
    Column {
        title: WAIT_TITLE,
        width: 8,
        rank: 2,
        value: |f| seconds(f.wait),
        spark: |f| f.wait,
    },
    Column {
        title: "busy/queue",
        width: 10,
        rank: 4,
        value: |f| match (f.in_flight, f.queued) {
            (None, None) => "-".into(),
            (a, b) => format!("{}/{}", number(a), number(b)),
        },
        spark: |f| Some(f.in_flight? + f.queued.unwrap_or(0.0)),
    },
    Column {
        title: "req/s",
        width: 8,
        rank: 1,
        value: |f| number(f.rps),
        spark: |f| f.rps,
    },
    Column {
        title: "429/s",
        width: 7,
        rank: 5,
        value: |f| number(f.rejected),
        spark: |f| f.rejected,
    },
    Column {
        title: "err/s",
        width: 7,
        rank: 6,
        value: |f| number(f.errors),
        spark: |f| f.errors,
    },
    Column {
        title: "ttfb p50",
        width: 8,
        rank: 7,
        value: |f| seconds(f.ttfb_p50),
        spark: |f| f.ttfb_p50,
    },
    Column {
        title: "ttfb p99",
        width: 8,
        rank: 3,
        value: |f| seconds(f.ttfb_p99),
        spark: |f| f.ttfb_p99,
    },
];

/// Width of the state column.
pub const STATE_WIDTH: u16 = 11;
/// The wait column's heading, which the view colours by the worker's limit.
pub const WAIT_TITLE: &str = "wait";
/// Bounds of the worker column's width: its names' length within them; it also takes
/// what the other columns leave.
const WORKER_MIN: u16 = 12;
const WORKER_MAX: u16 = 28;

/// How the table fits its area: the worker column wide enough for the names (within
/// bounds), the figure columns that fit whole (by rank, shown in their order), and whether
/// rows have room for their sparklines.
pub struct Fit {
    /// Least width of the worker column.
    pub worker_width: u16,
    /// The figure columns shown, in their order.
    pub columns: Vec<&'static Column>,
    /// Whether rows have two lines: the figures over their sparklines.
    pub tall: bool,
}

impl Fit {
    /// How a table of `board` fits `area`.
    pub fn of(area: Rect, board: &Board) -> Fit {
        let longest = board
            .rows
            .iter()
            .map(|r| worker_label(r).chars().count())
            .max()
            .unwrap_or(0);
        let worker_width = u16::try_from(longest)
            .unwrap_or(u16::MAX)
            .clamp(WORKER_MIN, WORKER_MAX);
        let mut room = area.width.saturating_sub(worker_width + 1 + STATE_WIDTH);
        let mut by_rank: Vec<&'static Column> = COLUMNS.iter().collect();
        by_rank.sort_by_key(|c| c.rank);
        let mut kept: Vec<&'static Column> = Vec::new();
        for c in by_rank {
            if c.width < room {
                room -= c.width + 1;
                kept.push(c);
            }
        }
        let columns = COLUMNS
            .iter()
            .filter(|c| kept.iter().any(|k| std::ptr::eq(*k, *c)))
            .collect();
        let rows = u16::try_from(board.rows.len()).unwrap_or(u16::MAX);
        Fit {
            worker_width,
            columns,
            // Header and border, then the totals and each worker on two lines.
            tall: area.height >= 2 + 2 * rows.saturating_add(1),
        }
    }
}

/// A worker's name in its row: its id and URL, the URL without `http://`.
pub fn worker_label(w: &WorkerRow) -> String {
    let url = w.url.strip_prefix("http://").unwrap_or(&w.url);
    match w.id {
        Some(id) => format!("#{id} {url}"),
        None => url.to_string(),
    }
}

/// A figure in at most 6 characters: `0.25`, `12.5`, `3200`, `12.3k`, `4.5M`; `-` unknown.
pub fn number(v: Option<f64>) -> String {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return "-".into();
    };
    let a = v.abs();
    if v.fract() == 0.0 && a < 10_000.0 {
        format!("{v:.0}")
    } else if a < 10.0 {
        format!("{v:.2}")
    } else if a < 100.0 {
        format!("{v:.1}")
    } else if a < 10_000.0 {
        format!("{v:.0}")
    } else if a < 10_000_000.0 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

/// Seconds as `850ms`, `1.25s`, `12.5s`; `-` unknown.
pub fn seconds(v: Option<f64>) -> String {
    match v.filter(|v| v.is_finite()) {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1e3),
        Some(s) if s < 10.0 => format!("{s:.2}s"),
        Some(s) => format!("{s:.1}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_fit_their_columns() {
        assert_eq!(number(Some(0.0)), "0");
        assert_eq!(number(Some(8.0)), "8");
        assert_eq!(number(Some(0.25)), "0.25");
        assert_eq!(number(Some(12.34)), "12.3");
        assert_eq!(number(Some(3200.0)), "3200");
        assert_eq!(number(Some(12_345.0)), "12.3k");
        assert_eq!(number(Some(45_000_000.0)), "45.0M");
        assert_eq!(number(None), "-");
        assert_eq!(seconds(Some(0.0123)), "12ms");
        assert_eq!(seconds(Some(1.25)), "1.25s");
        assert_eq!(seconds(Some(12.5)), "12.5s");
        for c in &COLUMNS {
            assert!(
                c.title.len() <= usize::from(c.width),
                "{} fits its column",
                c.title
            );
        }
    }

    #[test]
    fn the_columns_kept_are_those_of_the_lowest_ranks_in_their_order() {
        let board = Board::new(
            super::super::model::Watched::Workers,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(5),
        );
        let titles = |width| -> Vec<&str> {
            Fit::of(Rect::new(0, 0, width, 30), &board)
                .columns
                .iter()
                .map(|c| c.title)
                .collect()
        };
        assert_eq!(titles(200).len(), COLUMNS.len());
        // Ranks 1 to 3 fit; busy/queue (4) does not, the narrower 429/s (5) still does.
        assert_eq!(titles(60), ["wait", "req/s", "429/s", "ttfb p99"]);
        assert!(titles(20).is_empty());
    }
}

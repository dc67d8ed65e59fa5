//! Drawing the board on a terminal: a title line, one table with the endpoint's totals
//! then a row per worker (each figure over its sparkline of the last minute), and what is
//! wrong below it (an unreachable worker or autoscaler, a worker's error), wrapped, in up
//! to a third of the screen.
//!
//! Drawing is a pure function of the [`Board`], so a fixed board gives a fixed frame
//! (pinned by a snapshot on ratatui's test backend). Colour is a parameter: the caller
//! turns it off for `NO_COLOR`.

use super::columns::{Fit, STATE_WIDTH, WAIT_TITLE, worker_label};
use super::model::{Board, Track, UNREACHABLE, Watched};
use super::spark::sparkline;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap};

/// The styles of one frame.
#[derive(Debug, Clone, Copy)]
struct Palette {
    colour: bool,
}

impl Palette {
    fn fg(self, c: Color) -> Style {
        if self.colour {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn state(self, state: &str) -> Style {
        match state {
            "ready" => self.fg(Color::Green),
            "errored" | UNREACHABLE => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            _ => self.fg(Color::Yellow),
        }
    }

    /// A wait at `MAX_WAIT_TIME` or above (new requests get 429) in red, past half of it
    /// in yellow.
    fn wait(self, wait: Option<f64>, limit: Option<f64>) -> Style {
        match wait.zip(limit) {
            Some((w, l)) if w >= l => self.fg(Color::Red),
            Some((w, l)) if w >= l / 2.0 => self.fg(Color::Yellow),
            _ => Style::new(),
        }
    }

    fn spark(self) -> Style {
        self.fg(Color::Cyan)
    }
}

/// Draws `board` on the whole frame; `colour` off draws in the terminal's own colours.
pub fn render(frame: &mut Frame, board: &Board, colour: bool) {
    let p = Palette { colour };
    let problems = problems(board);
    let problem_height = if problems.is_empty() {
        0
    } else {
        (problems.len() as u16 + 2).min(frame.area().height / 3)
    };
    let [title, table, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(problem_height),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(title_line(board, p)), title);
    frame.render_widget(fleet_table(board, p, &Fit::of(table, board)), table);
    if problem_height > 0 {
        let lines: Vec<Line> = problems
            .into_iter()
            .map(|(who, what)| {
                Line::from(vec![
                    Span::styled(who, Style::new().add_modifier(Modifier::BOLD)),
                    Span::raw(": "),
                    Span::styled(what, p.fg(Color::Red)),
                ])
            })
            .collect();
        let block = Block::new().borders(Borders::ALL).title(" problems ");
        frame.render_widget(
            Paragraph::new(lines)
                .block(block)
                .wrap(Wrap { trim: false }),
            bottom,
        );
    }
}

fn title_line(board: &Board, p: Palette) -> Line<'static> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![
        Span::styled("vespa top", bold.patch(p.fg(Color::Cyan))),
        Span::raw(match &board.watched {
            Watched::Endpoint { name, autoscaler } => format!("  endpoint {name} at {autoscaler}"),
            Watched::Workers => "  workers".to_string(),
        }),
        Span::raw(format!(
            "  ·  {} of {} ready",
            board.ready(),
            board.rows.len()
        )),
        Span::raw(format!(
            "  ·  every {}, rates and ttfb over {}",
            span(board.interval.as_secs_f64()),
            span(board.window.as_secs_f64())
        )),
        Span::styled("  ·  q quits", Style::new().add_modifier(Modifier::DIM)),
    ];
    if board.at.is_none() {
        spans.insert(2, Span::raw("  ·  waiting for the first answers"));
    }
    Line::from(spans)
}

fn fleet_table(board: &Board, p: Palette, fit: &Fit) -> Table<'static> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut widths = vec![
        Constraint::Min(fit.worker_width),
        Constraint::Length(STATE_WIDTH),
    ];
    widths.extend(fit.columns.iter().map(|c| Constraint::Length(c.width)));
    let header = Row::new(
        ["worker", "state"]
            .into_iter()
            .chain(fit.columns.iter().map(|c| c.title)),
    )
    .style(bold.add_modifier(Modifier::UNDERLINED));
    let label = match board.watched {
        Watched::Endpoint { .. } => "endpoint",
        Watched::Workers => "all",
    };
    let totals = Subject {
        name: Text::from(vec![Line::from(label), Line::from("(totals)")]),
        state: Cell::new(format!("{}/{} ready", board.ready(), board.rows.len())),
        track: &board.totals,
        wait_limit: None,
    };
    let mut rows = vec![figures_row(board, totals, p, fit).style(bold)];
    for w in &board.rows {
        let worker = Subject {
            name: Text::from(worker_label(w)),
            state: Cell::new(Span::styled(w.state.clone(), p.state(&w.state))),
            track: &w.track,
            wait_limit: w.max_wait_time,
        };
        rows.push(figures_row(board, worker, p, fit));
    }
    if board.rows.is_empty() && board.at.is_some() {
        rows.push(Row::new([Cell::new("no worker listed")]));
    }
    Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::new().borders(Borders::TOP))
}

/// What a row is of: the endpoint's totals or a worker.
struct Subject<'a> {
    name: Text<'static>,
    state: Cell<'static>,
    track: &'a Track,
    /// `MAX_WAIT_TIME`, when known: the wait is coloured as it nears it.
    wait_limit: Option<f64>,
}

/// A row: each figure, and under it its sparkline when the rows are tall.
fn figures_row(board: &Board, who: Subject<'_>, p: Palette, fit: &Fit) -> Row<'static> {
    let track = who.track;
    let mut cells = vec![Cell::new(who.name), who.state];
    for c in &fit.columns {
        let mut value = Line::from((c.value)(&track.latest));
        if c.title == WAIT_TITLE {
            value = value.style(p.wait(track.latest.wait, who.wait_limit));
        }
        if !fit.tall {
            cells.push(Cell::new(value));
            continue;
        }
        let spark = match board.at {
            Some(now) => sparkline(
                &track.history,
                now,
                c.spark,
                usize::from(c.width),
                board.interval,
            ),
            None => String::new(),
        };
        cells.push(Cell::new(Text::from(vec![
            value,
            Line::from(Span::styled(spark, p.spark())),
        ])));
    }
    Row::new(cells).height(if fit.tall { 2 } else { 1 })
}

/// What is wrong, as `(who, what)`: the autoscaler first, then each worker in order.
fn problems(board: &Board) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(Err(e)) = &board.autoscaler {
        out.push(("autoscaler".to_string(), e.clone()));
    }
    for w in &board.rows {
        if let Some(problem) = &w.problem {
            out.push((w.url.clone(), problem.clone()));
        }
    }
    out
}

/// A span of time for the title: `1 s`, `0.5 s`.
fn span(secs: f64) -> String {
    format!("{secs} s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::Poll;
    use crate::top::model::tests::{probe, reading};
    use crate::top::parse::Listed;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::time::{Duration, Instant};

    /// Two ready workers and one that stopped answering, watched through an autoscaler,
    /// after a minute of polls.
    fn fleet() -> Board {
        let watched = Watched::Endpoint {
            name: "demo".into(),
            autoscaler: "http://127.0.0.1:8081".into(),
        };
        let mut board = Board::new(watched, Duration::from_secs(1), Duration::from_secs(5));
        let t0 = Instant::now();
        for i in 0..=60u32 {
            let n = f64::from(i);
            // The small worker's traffic grows over the minute; the big one's slows down
            // while 429s start.
            let mut small = reading(n * n / 4.0, 0.0, 0.0, 4.0 * n, n);
            small.max_perf = Some(1600.0);
            small.in_flight = Some((n / 8.0).floor());
            small.working_set = Some(20.0 * n);
            let mut big = reading(
                20.0 * n - n * n / 8.0,
                (n - 40.0).max(0.0),
                0.0,
                8.0 * n,
                0.0,
            );
            big.estimated_wait = Some(n / 20.0);
            let dead = if i < 30 {
                Ok(reading(5.0 * n, 0.0, 0.5 * n, n, 0.0))
            } else {
                Err("connection refused (os error 111)".into())
            };
            let listed = |id| {
                Some(Listed {
                    id: Some(id),
                    ..Listed::default()
                })
            };
            let mut workers = vec![
                probe("http://127.0.0.1:4001", Ok(small)),
                probe("http://127.0.0.1:4002", Ok(big)),
                probe("http://127.0.0.1:4003", dead),
            ];
            for (w, id) in workers.iter_mut().zip(1..) {
                w.listed = listed(id);
            }
            board.observe(Poll {
                at: t0 + Duration::from_secs(u64::from(i)),
                autoscaler: Some(Ok(())),
                workers,
            });
        }
        board
    }

    fn draw(board: &Board, width: u16, height: u16) -> TestBackend {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| render(f, board, true)).unwrap();
        terminal.backend().clone()
    }

    #[test]
    fn a_fleet_frame() {
        insta::assert_snapshot!(draw(&fleet(), 120, 16));
    }

    #[test]
    fn a_small_terminal_drops_the_last_columns_and_the_sparklines() {
        let text = draw(&fleet(), 70, 12).to_string();
        for shown in [
            "#3 127.0.0.1:4003",
            "unreachable",
            "req/s",
            "wait",
            "ttfb p99",
            "problems",
        ] {
            assert!(text.contains(shown), "{shown} in {text}");
        }
        for hidden in ["max_perf", "ttfb p50", "█"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        // Tall enough again: the sparklines come back.
        assert!(draw(&fleet(), 70, 16).to_string().contains('█'));
    }

    #[test]
    fn without_colour_no_cell_has_a_colour() {
        let mut terminal = Terminal::new(TestBackend::new(120, 16)).unwrap();
        terminal.draw(|f| render(f, &fleet(), false)).unwrap();
        let buffer = terminal.backend().buffer();
        assert!(
            buffer
                .content()
                .iter()
                .all(|c| c.fg == Color::Reset && c.bg == Color::Reset)
        );
        let mut coloured = Terminal::new(TestBackend::new(120, 16)).unwrap();
        coloured.draw(|f| render(f, &fleet(), true)).unwrap();
        assert!(
            coloured
                .backend()
                .buffer()
                .content()
                .iter()
                .any(|c| c.fg == Color::Red)
        );
    }

    #[test]
    fn a_wait_past_the_workers_limit_is_red_and_past_half_of_it_yellow() {
        let mut board = Board::new(
            Watched::Workers,
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        let worker = |url: &str, wait: f64| {
            let mut r = reading(0.0, 0.0, 0.0, 0.0, 0.0);
            r.estimated_wait = Some(wait);
            let mut p = probe(url, Ok(r));
            p.status = Some(crate::top::parse::StatusDoc {
                error: None,
                max_wait_time: Some(10.0),
            });
            p
        };
        board.observe(Poll {
            at: Instant::now(),
            autoscaler: None,
            workers: vec![
                worker("http://a", 12.5),
                worker("http://b", 6.25),
                worker("http://c", 1.25),
            ],
        });
        let mut terminal = Terminal::new(TestBackend::new(120, 12)).unwrap();
        terminal.draw(|f| render(f, &board, true)).unwrap();
        let buffer = terminal.backend().buffer();
        let colour_of = |text: &str| {
            let width = buffer.area.width;
            let cells = buffer.content();
            let line_of = |y: u16| -> String {
                (0..width)
                    .map(|x| cells[usize::from(y * width + x)].symbol())
                    .collect()
            };
            let y = (0..buffer.area.height)
                .find(|y| line_of(*y).contains(text))
                .unwrap_or_else(|| panic!("{text} not drawn"));
            let line = line_of(y);
            let byte = line.find(text).unwrap();
            let x = u16::try_from(line[..byte].chars().count()).unwrap();
            cells[usize::from(y * width + x)].fg
        };
        assert_eq!(colour_of("12.5s"), Color::Red);
        assert_eq!(colour_of("6.25s"), Color::Yellow);
        assert_eq!(colour_of("1.25s"), Color::Reset);
    }

    #[test]
    fn before_the_first_poll_the_view_says_it_waits() {
        let board = Board::new(
            Watched::Workers,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        let text = draw(&board, 120, 8).to_string();
        assert!(text.contains("waiting for the first answers"), "{text}");
    }

    #[test]
    fn a_span_of_time_is_plain_seconds() {
        assert_eq!(span(1.0), "1 s");
        assert_eq!(span(0.5), "0.5 s");
    }
}

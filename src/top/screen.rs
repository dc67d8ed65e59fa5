//! `vespa top` on a terminal: the full-screen view, redrawn at each poll and on resize,
//! until `q`, Esc or Ctrl-C (or `--count` polls).
//!
//! The terminal is put back (raw mode off, the main screen back, the cursor shown) however
//! the view ends: by a key, an error, the caller dropping the future (`vespa demo` does
//! when its traffic ends), or a panic (ratatui's hook restores it before the panic
//! message prints). Keys come from crossterm's event stream on the runtime, so the view
//! answers a key at once even while a poll waits on a slow worker: polls run in their own
//! task and arrive over a channel.

use super::config::TopConfig;
use super::fetch::Fetcher;
use super::model::Board;
use super::view;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{Clear, ClearType};
use futures_util::StreamExt;
use ratatui::DefaultTerminal;

/// Shows the live view of `config`'s fleet until the user quits or `config.count` polls
/// are shown. `colour` off draws in the terminal's own colours (`NO_COLOR`).
pub async fn watch(config: &TopConfig, fetcher: Fetcher, colour: bool) -> std::io::Result<()> {
    let mut board = Board::new(config.source.watched(), config.interval, config.window);
    let (_poller, mut polls) = super::polls(fetcher, config);
    let mut screen = Screen::enter()?;
    let mut events = EventStream::new();
    loop {
        screen
            .terminal
            .draw(|frame| view::render(frame, &board, colour))?;
        tokio::select! {
            poll = polls.recv() => match poll {
                Some(poll) => board.observe(poll),
                None => return Ok(()),
            },
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if quits(&key) => return Ok(()),
                // A resize, or anything else: draw again.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}

/// `q`, Esc and Ctrl-C quit (raw mode turns Ctrl-C into a key, not a signal).
fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// The terminal in raw mode on the alternate screen; dropping it restores the terminal.
struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        // Internal: if entering fails half-way (raw mode on, the alternate screen not),
        // restore what was done.
        let screen = ratatui::try_init()
            .map(|terminal| Screen { terminal })
            .inspect_err(|_| ratatui::restore())?;
        // The first frame draws only what differs from a blank screen: start from one, even
        // where the alternate screen keeps old text. (`Terminal::clear` would ask the
        // terminal where its cursor is, which not every terminal answers.)
        crossterm::execute!(std::io::stdout(), Clear(ClearType::All))?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
        let _ = self.terminal.show_cursor();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_esc_and_ctrl_c_quit_and_other_keys_do_not() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
        let mut release = key(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert!(!quits(&release));
    }
}

//! A live progress line for commands that wait (`rollback`): a spinner, what is happening
//! and the time so far, redrawn in place on a terminal. Piped, only the plain lines the
//! command prints anyway are written; with `--output json`, nothing but the JSON.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use super::output::outln;

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

pub struct Progress {
    live: bool,
    started: Instant,
    frame: usize,
    drawn: bool,
}

impl Progress {
    /// Live only when stdout is a terminal and the output is for people.
    pub fn new(for_people: bool) -> Progress {
        Progress::with(for_people && std::io::stdout().is_terminal())
    }

    fn with(live: bool) -> Progress {
        Progress {
            live,
            started: Instant::now(),
            frame: 0,
            drawn: false,
        }
    }

    /// Redraws the live line: `⠹ rolling back alpha: gate_probe · 3.2 s`.
    pub fn tick(&mut self, doing: &str) {
        if !self.live {
            return;
        }
        self.frame = (self.frame + 1) % FRAMES.len();
        let line = render(
            FRAMES[self.frame],
            doing,
            self.started.elapsed().as_secs_f64(),
        );
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{line}").and_then(|()| out.flush());
        self.drawn = true;
    }

    /// Prints a plain line above the live one.
    pub fn line(&mut self, text: &str) {
        self.clear();
        outln!("{text}");
    }

    /// Removes the live line (before the command's last words).
    pub fn clear(&mut self) {
        if self.drawn {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K").and_then(|()| out.flush());
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

fn render(frame: char, doing: &str, seconds: f64) -> String {
    format!("{frame} {doing} · {seconds:.1} s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_what_happens_and_for_how_long() {
        assert_eq!(
            render('⠹', "rolling back alpha: gate_probe", 3.25),
            "⠹ rolling back alpha: gate_probe · 3.2 s"
        );
    }

    #[test]
    fn off_a_terminal_nothing_is_drawn() {
        let mut p = Progress::with(false);
        p.tick("waiting");
        assert!(!p.drawn);
    }
}

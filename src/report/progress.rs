//! Progress of long command-line work (`reconcile`, `report`): users scanned of the total, the rate
//! and the time left.
//!
//! On a terminal it is one bar redrawn in place; anywhere else (a pipe, a CI log, a file) it is a
//! plain line at most every [`LINE_INTERVAL`], and always one at the end, so a log shows the run
//! without a wall of carriage returns. It writes to stderr only: stdout carries the command's
//! answer (`--output json`), and nothing here may break it.
//!
//! ```
//! use oci_user_capabilities::report::progress::{Progress, Style};
//!
//! let mut progress = Progress::new("report", Style::Lines, Vec::new());
//! progress.set_total(Some(2));
//! progress.advance(2);
//! progress.finish();
//! let text = String::from_utf8(progress.into_writer()).unwrap();
//! assert!(text.contains("report: scanned 2 of 2"));
//! ```

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// The least time between two plain lines.
pub const LINE_INTERVAL: Duration = Duration::from_secs(2);
/// The least time between two redraws of the bar (a terminal need not be repainted for every user).
const BAR_INTERVAL: Duration = Duration::from_millis(100);
/// Characters of the bar between its brackets.
const BAR_WIDTH: u64 = 24;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A bar redrawn in place (a terminal).
    Bar,
    /// Plain lines, at most one every [`LINE_INTERVAL`] and one at the end.
    Lines,
    /// Nothing.
    Off,
}

impl Style {
    /// The bar when stderr is a terminal, lines otherwise.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// Progress of one piece of work, written to `W` (stderr in the commands, a buffer in tests).
#[derive(Debug)]
pub struct Progress<W: Write = std::io::Stderr> {
    label: String,
    style: Style,
    out: W,
    total: Option<u64>,
    done: u64,
    /// Counts the caller wants shown after the numbers (e.g. "applied 3, failed 0").
    detail: String,
    started: Instant,
    last_drawn: Option<Instant>,
    /// A bar is on screen and the line must be ended before anything else is written.
    bar_open: bool,
}

impl Progress<std::io::Stderr> {
    /// Progress on stderr, as a bar on a terminal and lines elsewhere.
    pub fn stderr(label: impl Into<String>) -> Self {
        Self::new(label, Style::for_stderr(), std::io::stderr())
    }
}

impl<W: Write> Progress<W> {
    /// Progress named `label` (the first word of each line), shown in `style` on `out`.
    pub fn new(label: impl Into<String>, style: Style, out: W) -> Self {
        Self {
            label: label.into(),
            style,
            out,
            total: None,
            done: 0,
            detail: String::new(),
            started: Instant::now(),
            last_drawn: None,
            bar_open: false,
        }
    }

    /// The number of users to scan, once known (a listing's `totalResults`); `None` while unknown.
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// Counts to show after the numbers, e.g. `applied 3, failed 0`.
    pub fn set_detail(&mut self, detail: impl Into<String>) {
        self.detail = detail.into();
    }

    /// `n` more users scanned; redraws when it is time to.
    pub fn advance(&mut self, n: u64) {
        self.set_done(self.done.saturating_add(n));
    }

    /// The users scanned so far; redraws when it is time to.
    pub fn set_done(&mut self, done: u64) {
        self.done = done;
        let now = Instant::now();
        let interval = match self.style {
            Style::Bar => BAR_INTERVAL,
            Style::Lines => LINE_INTERVAL,
            Style::Off => return,
        };
        if self
            .last_drawn
            .is_none_or(|t| now.duration_since(t) >= interval)
        {
            self.draw(now);
        }
    }

    /// The final state, always shown; a bar is ended with a line break.
    pub fn finish(&mut self) {
        if self.style == Style::Off {
            return;
        }
        self.draw(Instant::now());
        if self.bar_open {
            let _ = writeln!(self.out);
            self.bar_open = false;
        }
        let _ = self.out.flush();
    }

    /// The writer back (tests read what was shown).
    pub fn into_writer(self) -> W {
        self.out
    }

    fn draw(&mut self, now: Instant) {
        self.last_drawn = Some(now);
        let line = self.line(now.duration_since(self.started));
        // Write errors (stderr closed) must never stop the work.
        let _ = match self.style {
            Style::Bar => {
                self.bar_open = true;
                let bar = bar(self.done, self.total, BAR_WIDTH);
                write!(self.out, "\r\x1b[2K{bar} {line}")
            }
            Style::Lines => writeln!(self.out, "{line}"),
            Style::Off => Ok(()),
        };
        let _ = self.out.flush();
    }

    /// `reconcile: scanned 1200 of 2345 (51%), 310/s, ETA 4s; applied 3`.
    fn line(&self, elapsed: Duration) -> String {
        let mut line = format!("{}: scanned {}", self.label, self.done);
        match self.total {
            Some(total) => {
                line.push_str(&format!(" of {total}"));
                if let Some(percent) = (self.done.min(total) * 100).checked_div(total) {
                    line.push_str(&format!(" ({percent}%)"));
                }
            }
            None => line.push_str(" of ?"),
        }
        let rate = rate(self.done, elapsed);
        if let Some(r) = rate {
            line.push_str(&format!(", {r:.0}/s"));
        }
        if let (Some(r), Some(total)) = (rate, self.total) {
            if self.done < total && r > 0.0 {
                let left = Duration::from_secs_f64((total - self.done) as f64 / r);
                line.push_str(&format!(", ETA {}", human(left)));
            }
        }
        if !self.detail.is_empty() {
            line.push_str("; ");
            line.push_str(&self.detail);
        }
        line
    }
}

/// Users per second; `None` before there is anything to measure.
fn rate(done: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (done > 0 && secs >= 0.05).then(|| done as f64 / secs)
}

/// `[#####-------]` for `done` of `total` (an empty bar while the total is unknown).
pub fn bar(done: u64, total: Option<u64>, width: u64) -> String {
    let filled = match total {
        Some(t) if t > 0 => (done.min(t) * width / t) as usize,
        _ => 0,
    };
    let width = width as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// `4s`, `3m05s`, `2h07m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0, None, 4), "[----]");
        assert_eq!(bar(1, Some(2), 4), "[##--]");
        assert_eq!(bar(9, Some(3), 4), "[####]");
        assert_eq!(bar(5, Some(0), 4), "[----]");
    }

    #[test]
    fn a_line_says_scanned_of_total_rate_and_time_left() {
        let mut p = Progress::new("reconcile", Style::Lines, Vec::new());
        p.total = Some(2345);
        p.done = 1200;
        p.set_detail("applied 3");
        assert_eq!(
            p.line(Duration::from_secs(4)),
            "reconcile: scanned 1200 of 2345 (51%), 300/s, ETA 3s; applied 3"
        );
        p.total = None;
        p.detail.clear();
        assert_eq!(p.line(Duration::ZERO), "reconcile: scanned 1200 of ?");
        p.total = Some(1200);
        assert_eq!(
            p.line(Duration::from_secs(600)),
            "reconcile: scanned 1200 of 1200 (100%), 2/s"
        );
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(7620)), "2h07m");
    }

    #[test]
    fn lines_are_spaced_out_and_the_last_always_shown() {
        let mut p = Progress::new("report", Style::Lines, Vec::new());
        p.set_total(Some(1000));
        for _ in 0..1000 {
            p.advance(1);
        }
        p.finish();
        let text = String::from_utf8(p.into_writer()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The first advance draws, then nothing for LINE_INTERVAL, then the end.
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[1].starts_with("report: scanned 1000 of 1000 (100%)"));
        assert!(!text.contains('\r') && !text.contains('\x1b'));
    }

    #[test]
    fn a_bar_redraws_in_place_and_ends_its_line() {
        let mut p = Progress::new("report", Style::Bar, Vec::new());
        p.set_total(Some(4));
        p.advance(2);
        p.finish();
        let text = String::from_utf8(p.into_writer()).unwrap();
        assert!(text.starts_with("\r\x1b[2K[############------------] report: scanned 2 of 4"));
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn off_writes_nothing() {
        let mut p = Progress::new("report", Style::Off, Vec::new());
        p.advance(5);
        p.finish();
        assert!(p.into_writer().is_empty());
    }
}

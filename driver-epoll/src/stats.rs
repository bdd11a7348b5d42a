//! `--stats DELAY`: a table of event counts on standard error, as upstream
//! prints it (foreground only).
//!
//! Each line has the number of epoll events handled so far, by kind; a line
//! is printed after an event once at least DELAY seconds have passed since
//! the previous one (nothing is printed while nothing happens), and the
//! column headings every 20 lines.

use passt_core::Instant;
use std::io::Write;

/// Column headings: the kinds of epoll events, by tag (see `token`).
const KINDS: [&str; 6] = ["socket", "link", "listen", "signal", "pidfd", "inotify"];

/// Event counters and when they were last printed.
#[derive(Debug)]
pub(crate) struct Stats {
    every_ns: u64,
    last: Option<Instant>,
    lines: u32,
    events: [u64; KINDS.len()],
}

impl Stats {
    /// Counters printed at most every `secs` seconds.
    pub(crate) fn new(secs: u32) -> Stats {
        Stats {
            every_ns: u64::from(secs) * 1_000_000_000,
            last: None,
            lines: 0,
            events: [0; KINDS.len()],
        }
    }

    /// Counts one event of epoll tag `tag` (1-based, as the tags are).
    pub(crate) fn event(&mut self, tag: u64) {
        let i = usize::try_from(tag).unwrap_or(0).wrapping_sub(1);
        if let Some(c) = self.events.get_mut(i) {
            *c += 1;
        }
    }

    /// Prints a line if the delay has passed since the last one.
    pub(crate) fn tick(&mut self, now: Instant) {
        if let Some(l) = self.last {
            if now.since(l).as_nanos() < u128::from(self.every_ns) {
                return;
            }
        }
        self.last = Some(now);
        let mut out = String::new();
        if self.lines.is_multiple_of(20) {
            out.push_str(&self.header());
        }
        out.push_str(&self.line());
        self.lines += 1;
        // Standard error is still the terminal: --stats needs the foreground.
        let _ = std::io::stderr().write_all(out.as_bytes());
    }

    /// The headings: one per line, each over its column, as a staircase.
    fn header(&self) -> String {
        let mut s = String::new();
        for (i, k) in KINDS.iter().enumerate() {
            for c in 0..(i + 1) * 9 {
                s.push(if c > 0 && c % 9 == 0 { '|' } else { ' ' });
            }
            s.push_str(k);
            s.push('\n');
        }
        s
    }

    fn line(&self) -> String {
        let mut s = String::from(" ");
        for v in self.events {
            s.push_str(&format!(" {v:8}"));
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn columns_and_pacing() {
        let mut s = Stats::new(2);
        s.event(1);
        s.event(1);
        s.event(2);
        s.event(0);
        s.event(99);
        assert_eq!(s.events, [2, 1, 0, 0, 0, 0]);
        let l = s.line();
        assert_eq!(
            l.split_whitespace().collect::<Vec<_>>(),
            ["2", "1", "0", "0", "0", "0"]
        );
        let h = s.header();
        assert_eq!(h.lines().count(), KINDS.len());
        // Each heading starts where its column's number ends.
        let last = h.lines().last().unwrap_or_default();
        assert!(last.ends_with("inotify"));
        let t0 = Instant::ZERO + Duration::from_secs(10);
        s.tick(t0);
        assert_eq!((s.lines, s.last), (1, Some(t0)));
        s.tick(t0 + Duration::from_secs(1));
        assert_eq!(s.lines, 1, "within the delay: nothing");
        s.tick(t0 + Duration::from_secs(2));
        assert_eq!(s.lines, 2);
    }
}

//! Time-sequence graphs of a TCP connection (the Stevens graph of tcptrace
//! and Wireshark): one direction's data against time, with the receiver's
//! acknowledgements, the right edge of the window it offered,
//! retransmissions and the periods its window was closed.
//!
//! The data points ([`TimeSeq`]) come from frames (a capture, or the frames
//! of a simulator run) and have a text form for snapshots; [`svg`] draws one
//! or more of them side by side with `plotters`' SVG backend.

use crate::replay::capture::{Capture, Trace};
use crate::replay::plan::{ms, Side};
use crate::replay::wire::flags;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The names of the series, as the legend shows them.
pub const SERIES: [&str; 5] = [
    "data sent",
    "ACKed",
    "window edge",
    "retransmissions",
    "zero window",
];

/// One direction of one TCP connection over time. Times are ns since the
/// connection's first segment, sequence numbers bytes since the sender's SYN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeSeq {
    /// What the graph shows (shown as its caption).
    pub title: String,
    /// The connection and the direction.
    pub flow: String,
    /// New data: (time, first byte, end).
    pub sent: Vec<(u64, u64, u64)>,
    /// Data sent again: (time, first byte, end).
    pub retransmitted: Vec<(u64, u64, u64)>,
    /// The receiver's acknowledgement, when it moved.
    pub acked: Vec<(u64, u64)>,
    /// The right edge of the receiver's window (ACK plus window), when it
    /// moved.
    pub window: Vec<(u64, u64)>,
    /// Periods the receiver's window was closed: (from, to).
    pub zero_windows: Vec<(u64, u64)>,
    /// Time of the connection's last segment.
    pub end: u64,
}

/// Which connection: a port or an address of either end; `None`: the one
/// that carried the most data.
fn select<'a>(traces: &'a [Trace], flow: Option<&str>) -> Result<&'a Trace, String> {
    let extent = |t: &Trace| -> u64 { t.segs.iter().map(|s| u64::from(s.h.len)).sum() };
    match flow {
        None => traces
            .iter()
            .max_by_key(|t| extent(t))
            .ok_or_else(|| "no TCP connection in the frames".to_string()),
        Some(f) => {
            let hit = |t: &&Trace| -> bool {
                if let Ok(p) = f.parse::<u16>() {
                    t.guest.port() == p || t.remote.port() == p
                } else if let Ok(a) = f.parse::<SocketAddr>() {
                    t.guest == a || t.remote == a
                } else {
                    false
                }
            };
            traces
                .iter()
                .filter(hit)
                .max_by_key(|t| extent(t))
                .ok_or_else(|| {
                    format!("no TCP connection matches `{f}` (a port, or ADDR:PORT of either end)")
                })
        }
    }
}

impl TimeSeq {
    /// The graph of one connection of `cap` (see [`select`]), for the data
    /// `sender` sent (`None`: the direction that carried more).
    pub fn from_capture(
        cap: &Capture,
        flow: Option<&str>,
        sender: Option<Side>,
        title: &str,
    ) -> Result<TimeSeq, String> {
        let traces = cap.traces();
        let tr = select(&traces, flow)?;
        let bytes = |g: bool| -> u64 {
            tr.segs
                .iter()
                .filter(|s| s.from_guest == g)
                .map(|s| u64::from(s.h.len))
                .sum()
        };
        let from_guest = match sender {
            Some(Side::Guest) => true,
            Some(Side::Host) => false,
            None => bytes(true) >= bytes(false),
        };
        Ok(TimeSeq::from_trace(tr, from_guest, title))
    }

    fn from_trace(tr: &Trace, from_guest: bool, title: &str) -> TimeSeq {
        let t0 = tr.segs.first().map_or(0, |s| s.t);
        let syn = |g: bool| {
            tr.segs
                .iter()
                .find(|s| s.from_guest == g && s.h.has(flags::SYN))
        };
        let isn = syn(from_guest).map_or_else(
            || {
                tr.segs
                    .iter()
                    .find(|s| s.from_guest == from_guest)
                    .map_or(0, |s| s.h.seq.wrapping_sub(1))
            },
            |s| s.h.seq,
        );
        let scale = match (
            syn(from_guest).and_then(|s| s.h.opts.wscale),
            syn(!from_guest).and_then(|s| s.h.opts.wscale),
        ) {
            (Some(_), Some(r)) => r,
            _ => 0,
        };
        let unwrap = |v: u32, near: u64| -> u64 {
            let d = v
                .wrapping_sub(isn)
                .wrapping_sub(1)
                .wrapping_sub(near as u32) as i32;
            near.saturating_add_signed(i64::from(d))
        };
        let (a, b) = if from_guest {
            (tr.guest, tr.remote)
        } else {
            (tr.remote, tr.guest)
        };
        let mut ts = TimeSeq {
            title: title.to_string(),
            flow: format!(
                "{a} > {b}, data from the {}",
                if from_guest { "guest" } else { "host" }
            ),
            end: tr.segs.last().map_or(0, |s| s.t - t0),
            ..TimeSeq::default()
        };
        let mut max_sent = 0u64;
        let mut last_ack = None;
        let mut last_edge = None;
        let mut closed_since: Option<u64> = None;
        for s in &tr.segs {
            let t = s.t - t0;
            let h = &s.h;
            if s.from_guest == from_guest {
                if h.len > 0 {
                    let start = unwrap(h.seq, max_sent);
                    let end = start + u64::from(h.len);
                    if start < max_sent {
                        ts.retransmitted.push((t, start, end));
                    } else {
                        ts.sent.push((t, start, end));
                    }
                    max_sent = max_sent.max(end);
                }
            } else if h.has(flags::ACK) && !h.has(flags::RST) {
                let ack = unwrap(h.ack, last_ack.unwrap_or(0));
                let win = if h.has(flags::SYN) {
                    u64::from(h.win)
                } else {
                    u64::from(h.win) << scale
                };
                if last_ack != Some(ack) {
                    ts.acked.push((t, ack));
                    last_ack = Some(ack);
                }
                if last_edge != Some(ack + win) {
                    ts.window.push((t, ack + win));
                    last_edge = Some(ack + win);
                }
                match (win, closed_since) {
                    (0, None) => closed_since = Some(t),
                    (w, Some(from)) if w > 0 => {
                        ts.zero_windows.push((from, t));
                        closed_since = None;
                    }
                    _ => {}
                }
            }
        }
        if let Some(from) = closed_since {
            ts.zero_windows.push((from, ts.end));
        }
        ts
    }

    /// The data points as text, one per line (times in ms).
    pub fn data(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}\n{}", self.title, self.flow);
        for (name, v) in [("sent", &self.sent), ("retransmitted", &self.retransmitted)] {
            for (t, a, b) in v {
                let _ = writeln!(s, "{name} {} {a}..{b}", ms(*t));
            }
        }
        for (name, v) in [("acked", &self.acked), ("window", &self.window)] {
            for (t, a) in v {
                let _ = writeln!(s, "{name} {} {a}", ms(*t));
            }
        }
        for (a, b) in &self.zero_windows {
            let _ = writeln!(s, "zero-window {} {}", ms(*a), ms(*b));
        }
        let _ = writeln!(s, "end {}", ms(self.end));
        s
    }

    fn y_max(&self) -> u64 {
        let data = self
            .sent
            .iter()
            .chain(&self.retransmitted)
            .map(|x| x.2)
            .chain(self.acked.iter().map(|x| x.1))
            .max()
            .unwrap_or(0);
        // The window edge may run far ahead: show a little of it.
        let edge = self.window.iter().map(|x| x.1).max().unwrap_or(0);
        edge.min(data + data / 4 + 1).max(data + 1)
    }
}

/// The frames of a simulator run (at the core's end of the guest link) as a
/// capture, to plot.
pub fn capture_of_run(name: &str, r: &crate::scenario::RunResult) -> Result<Capture, String> {
    let frames: Vec<(std::time::Duration, Vec<u8>)> = r
        .wire
        .iter()
        .map(|(t, f)| (std::time::Duration::from_nanos(t.as_nanos()), f.clone()))
        .collect();
    let ips = crate::replay::capture::guest_ips(&crate::scenario::capture_config());
    Capture::from_frames(name, &frames, None, &ips)
}

/// Points of a step line through `v` (it holds until the next change).
fn steps(v: &[(u64, u64)], end: u64, ymax: u64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(v.len() * 2 + 1);
    for (i, (t, y)) in v.iter().enumerate() {
        let y = (*y).min(ymax) as f64;
        out.push((*t as f64 / 1e9, y));
        let next = v.get(i + 1).map_or(end, |n| n.0);
        out.push((next as f64 / 1e9, y));
    }
    out
}

fn size_label(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.0}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Draws `panels` side by side as one SVG document.
pub fn svg(panels: &[TimeSeq]) -> Result<String, String> {
    let e = |e: &dyn std::fmt::Display| format!("plot: {e}");
    let mut out = String::new();
    let n = panels.len().max(1) as u32;
    {
        let root = SVGBackend::with_string(&mut out, (720 * n, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let areas = root.split_evenly((1, n as usize));
        // One scale for all, so that panels side by side compare.
        let ymax = panels.iter().map(TimeSeq::y_max).max().unwrap_or(1);
        let xmax = (panels.iter().map(|p| p.end).max().unwrap_or(1).max(1) as f64 / 1e9) * 1.02;
        for (area, ts) in areas.iter().zip(panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{}: {}", ts.title, ts.flow), ("sans-serif", 14))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..xmax, 0f64..ymax as f64)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc("sequence (bytes)")
                .y_label_formatter(&|v| size_label(*v))
                .draw()
                .map_err(|x| e(&x))?;
            let zw = RGBColor(240, 200, 40).mix(0.35);
            chart
                .draw_series(ts.zero_windows.iter().map(|(a, b)| {
                    Rectangle::new(
                        [
                            (*a as f64 / 1e9, 0.0),
                            ((*b).max(*a + 1) as f64 / 1e9, ymax as f64),
                        ],
                        zw.filled(),
                    )
                }))
                .map_err(|x| e(&x))?
                .label(SERIES[4])
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], zw.filled()));
            let seg = |v: &[(u64, u64, u64)], c: RGBColor| -> Vec<PathElement<(f64, f64)>> {
                v.iter()
                    .map(|(t, a, b)| {
                        let t = *t as f64 / 1e9;
                        PathElement::new(
                            vec![(t, (*a).min(ymax) as f64), (t, (*b).min(ymax) as f64)],
                            c.stroke_width(2),
                        )
                    })
                    .collect()
            };
            chart
                .draw_series(seg(&ts.sent, BLUE))
                .map_err(|x| e(&x))?
                .label(SERIES[0])
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
            // The acknowledged edge (green) and the window's (purple), as steps.
            let lines = [
                (&ts.acked, RGBColor(0, 140, 0), SERIES[1]),
                (&ts.window, RGBColor(150, 60, 180), SERIES[2]),
            ];
            for (v, color, label) in lines {
                chart
                    .draw_series(LineSeries::new(steps(v, ts.end, ymax), color))
                    .map_err(|x| e(&x))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            chart
                .draw_series(seg(&ts.retransmitted, RED))
                .map_err(|x| e(&x))?
                .label(SERIES[3])
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_labels() {
        assert_eq!(
            steps(&[(0, 5), (2_000_000_000, 9)], 3_000_000_000, 8),
            vec![(0.0, 5.0), (2.0, 5.0), (2.0, 8.0), (3.0, 8.0)]
        );
        assert_eq!(size_label(1_500_000.0), "1.5M");
        assert_eq!(size_label(999.0), "999");
        assert!(svg(&[TimeSeq::default()]).unwrap().starts_with("<svg"));
        assert!(select(&[], None).is_err());
    }
}

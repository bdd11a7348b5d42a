//! Fuzz programs: arbitrary bytes read as a small program of guest and host
//! events, written out as a scenario and run leniently on the simulator, so a
//! fuzzer reaches established TCP connections (both directions, peeked data,
//! partial writes, resets, closes), UDP and ICMP flows with replies from the
//! host, a guest link that refuses frames, paused guests and timers, with
//! every invariant of [`crate::sim`] checked after each step (among them:
//! the core never acknowledges guest data its socket did not take).
//!
//! Layout: byte 0 picks the set-up (fault profile, host buffers, MTU, peek
//! offset), byte 1 the seed, bytes 2..6 the host peer models of ports
//! 80..83; then each op is a byte (its low nibble the kind) followed by its
//! arguments. Missing bytes read as zero, so every input is a program.
//! [`program`] gives the scenario text (readable, and runnable with
//! `passt-sim run`), [`run`] runs it.

use crate::scenario::{self, RunOptions, Scenario};
use std::fmt::Write as _;

/// Most ops read from one input (longer inputs are cut there).
pub const MAX_OPS: usize = 32;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn pick<'s>(&mut self, of: &[&'s str]) -> &'s str {
        of[usize::from(self.u8()) % of.len()]
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Fault profiles a program can run under (`none` twice: clean runs check
/// the window-stall invariant too).
const FAULTS: &[&str] = &[
    "none",
    "none",
    "host",
    "backpressure",
    "lossy",
    "reorder",
    "dup",
    "swarm",
];

/// The host peer model of a port.
fn peer_model(b: u8) -> String {
    let n = u32::from(b >> 3) * 512;
    match b & 7 {
        0 => "sink".into(),
        1 => "echo".into(),
        2 => format!("source {n}"),
        3 => format!("reset {n}"),
        4 => format!("slow {}", 4 + u32::from(b >> 3) * 8),
        5 => format!("speaks-first {}", n / 8),
        6 => "refuse".into(),
        _ => "sink rtt 2".into(),
    }
}

/// Whether the peer model of `b` closes its side by itself when the guest
/// sends it `sent` bytes (a model guest that waits for the peer's FIN may
/// wait for it only then): a source, a refusal, a reset after no more than
/// what the guest sends.
fn closes(b: u8, sent: u32) -> bool {
    match b & 7 {
        2 | 6 => true,
        3 => sent >= u32::from(b >> 3) * 512,
        _ => false,
    }
}

/// The scenario text of `data`.
// Long by design: one arm per fuzz opcode, each writing one scenario line; the table is the
// grammar the fuzzer explores.
pub fn program(data: &[u8]) -> String {
    let mut b = Bytes(data);
    let setup = b.u8();
    let seed = b.u8();
    let mut s = String::from("# fuzz program\n");
    let mut cfg = String::from(
        "`sim config capture forward=8080 forward=8081 forward=8082 forward=8083 udp-forward=5353",
    );
    if setup & 0x08 != 0 {
        cfg.push_str(" peek-offset");
    }
    if setup & 0x10 != 0 {
        cfg.push_str(" mtu=1500");
    }
    cfg.push_str("`\n");
    s.push_str(&cfg);
    let _ = writeln!(s, "`sim seed {seed}`");
    let _ = writeln!(s, "`sim faults {}`", FAULTS[usize::from(setup & 7)]);
    match setup >> 5 {
        1 => s.push_str("`sim host sndbuf 4096 rcvbuf 4096`\n"),
        2 => s.push_str("`sim host sndbuf 2304 rcvbuf 65536`\n"),
        3 => s.push_str("`sim host sndbuf 65536 rcvbuf 2304`\n"),
        4 => s.push_str("`sim host fd-limit 12`\n"),
        _ => {}
    }
    let mut models = [0u8; 4];
    for m in &mut models {
        *m = b.u8();
    }
    s.push_str("`sim peer 192.0.2.1:53 echo`\n");
    s.push_str("`sim peer [2001:db8::1]:53 echo`\n");
    s.push_str("`sim peer 192.0.2.1:54 refuse`\n");
    // Long enough for slow peers, paused guests and the retransmission
    // back-off to run their course before the final checks.
    s.push_str("`sim settle 200000`\n");
    // After the faults stop, a flow whose frames were all lost waits for its
    // retransmission timer, which backs off to at most 120 s: the heal phase
    // outlasts that gap.
    s.push_str("`sim heal 130000`\n");
    // Each connection to the host gets a port of its own (the checker maps
    // the core's sockets to guest flows by port): 1000 and up, with the
    // model of its kind.
    let mut body = String::from("0 `sim drain-at-end`\n");
    let mut next_port = 1000u16;
    let mut new_port = |s: &mut String, model: u8| {
        let port = next_port;
        next_port += 1;
        let _ = writeln!(s, "`sim peer *:{port} {}`", peer_model(model));
        port
    };
    let mut listens = 0u16;
    // Virtual time of the program so far, and the end of the guest's pause:
    // a host peer connecting to a paused guest is rightly given up after
    // the handshake timeout, and the guest's listening endpoint would then
    // wait for ever, so connections from the host and pauses stay apart.
    let mut now_ms = 0u64;
    let mut paused_until = 0u64;
    let mut scripted = 0u16;
    for _ in 0..MAX_OPS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        match op & 0x0f {
            // A model guest connection to a host peer.
            0..=2 => {
                let model = models[usize::from(op >> 4 & 3)];
                let port = new_port(&mut s, model);
                let dst = if op & 0x40 != 0 {
                    "[2001:db8::1]"
                } else {
                    "192.0.2.1"
                };
                let n = u32::from(b.u16()) % 24_000;
                let mss = [1400, 536, 64, 8960][usize::from(b.u8() & 3)];
                let closes = closes(model, n);
                let fin = if op & 0x80 != 0 && closes {
                    " fin-after-peer"
                } else {
                    ""
                };
                let _ = writeln!(
                    body,
                    "+0 `sim guest-tcp connect {dst}:{port} send {n} mss {mss}{fin}`"
                );
            }
            // A host peer connects to a forwarded port; a model guest
            // endpoint answers (at most one per port).
            3 if listens < 4 && now_ms >= paused_until => {
                let port = 8080 + listens;
                listens += 1;
                let n = u32::from(b.u16()) % 24_000;
                let model = b.u8();
                // A refusing model only refuses connections made to it.
                let fin = if op & 0x80 != 0 && closes(model, n) && model & 7 != 6 {
                    " fin-after-peer"
                } else {
                    ""
                };
                let _ = writeln!(body, "+0 `sim guest-tcp listen {port} send {n}{fin}`");
                let _ = writeln!(
                    body,
                    "+0 `sim host-connect 10.77.0.2:{port} {}`",
                    peer_model(model)
                );
            }
            // Datagrams to an echo server (or a refusing port), IPv4 or IPv6.
            4 => {
                let len = b.u16() % 2000;
                let sport = 5000 + u16::from(op >> 4);
                let count = 1 + (b.u8() & 7);
                for _ in 0..count {
                    if op & 0x80 != 0 {
                        let _ = writeln!(
                            body,
                            "+0 < udp [fd77::2]:{sport} > [2001:db8::1]:53 ({len})"
                        );
                    } else {
                        let dport = if op & 0x40 != 0 { 54 } else { 53 };
                        let _ = writeln!(
                            body,
                            "+0 < udp 10.77.0.2:{sport} > 192.0.2.1:{dport} ({len})"
                        );
                    }
                }
            }
            // Echo requests.
            5 => {
                let id = b.u8();
                let seq = b.u8();
                let len = b.u8();
                let dst = if op & 0x80 != 0 {
                    "2001:db8::1"
                } else {
                    "192.0.2.1"
                };
                let _ = writeln!(body, "+0 < ping {dst} id {id} seq {seq} len {len}");
            }
            // Time passes.
            6 | 7 => {
                let ms = [
                    0u32, 1, 5, 20, 100, 250, 1000, 3000, 10_000, 30_000, 130_000,
                ][usize::from(b.u8()) % 11];
                now_ms += u64::from(ms);
                let _ = writeln!(body, "+{}.{:03} `sim flush`", ms / 1000, ms % 1000);
            }
            // The guest stops reading its link for a while.
            8 if listens == 0 => {
                let secs = [1, 5, 20, 60][usize::from(op >> 4 & 3)];
                paused_until = now_ms + secs * 1000;
                let _ = writeln!(body, "+0 `sim guest-pause {secs}`");
            }
            // A scripted TCP connection: a handshake, then segments with
            // flags, sequence numbers, windows and lengths of the input's
            // choosing, as one batch.
            9 => {
                let port = new_port(&mut s, models[usize::from(op >> 4 & 3)]);
                let sport = 30000 + scripted;
                scripted += 1;
                let _ = writeln!(
                    body,
                    "+0 `sim flow 10.77.0.2:{sport} > 192.0.2.1:{port}`\n\
                     +0 < S 0:0(0) win 65535 <mss 1460,sackOK,nop,wscale 7>\n\
                     +0.001 < . 1:1(0) ack 1 win 512"
                );
                let segs = 1 + (b.u8() & 15);
                let mut seq = 1u32;
                for _ in 0..segs {
                    let f = b.u8();
                    let flags = b.pick(&[".", ".", "P.", "F.", "R", "R.", "S", "FP."]);
                    let len = u32::from(b.u8()) * [1, 8, 64, 0][usize::from(f & 3)];
                    let start = match f >> 2 & 3 {
                        0 | 1 => seq,
                        2 => seq.wrapping_add(u32::from(b.u8()) * 100),
                        _ => seq.wrapping_sub(u32::from(b.u8()) * 100),
                    };
                    if f >> 2 & 3 < 2 {
                        seq = seq.wrapping_add(len);
                    }
                    let ack = u32::from(b.u16());
                    let win = [0u32, 1, 100, 512, 65535][usize::from(f >> 4) % 5];
                    let _ = writeln!(
                        body,
                        "+0 < {flags} {start}:{}({len}) ack {ack} win {win}",
                        start.wrapping_add(len)
                    );
                }
            }
            // Raw bytes from the input as a frame.
            10 => {
                let len = usize::from(b.u8());
                let mut hex = String::new();
                for _ in 0..len.max(1) {
                    let _ = write!(hex, "{:02x}", b.u8());
                }
                let _ = writeln!(body, "+0 < raw {hex}");
            }
            // ARP and neighbour solicitations in the same batches.
            11 => body.push_str("+0 < arp who-has 10.77.0.1\n"),
            // A frame boundary: what was sent so far reaches the core.
            _ => body.push_str("+0 `sim flush`\n"),
        }
    }
    s.push_str(&body);
    s
}

/// Runs the program of `data`; `Err` holds the violations and the
/// timeline's last lines.
pub fn run(data: &[u8]) -> Result<(), String> {
    let text = program(data);
    let sc = Scenario::parse("fuzz", std::path::Path::new("."), &text)
        .map_err(|e| format!("program does not parse: {e}\n{text}"))?;
    let opts = RunOptions {
        lenient: true,
        ..Default::default()
    };
    let r = scenario::run(&sc, &opts).map_err(|e| format!("run: {e}\n{text}"))?;
    // Script errors (a directive the runner refused) are bugs of the
    // program writer above.
    if r.violations.is_empty() && r.failures.is_empty() {
        return Ok(());
    }
    let lines: Vec<&str> = r.timeline.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    Err(format!(
        "{}{}\n--- program\n{text}--- timeline (end)\n{tail}",
        r.violations.join("\n"),
        r.failures.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_parses() {
        for op in 0..=255u8 {
            let data = [0, 1, 0, 1, 2, 3, op, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7];
            let text = program(&data);
            Scenario::parse("fuzz", std::path::Path::new("."), &text)
                .unwrap_or_else(|e| panic!("op {op}: {e}\n{text}"));
        }
    }

    #[test]
    fn a_transfer_runs_clean() {
        // Clean link, sink on port 80; a model connection sends 2000 bytes.
        let data = [0, 0, 0, 1, 2, 3, 0x00, 0x07, 0xd0, 0, 6, 4];
        if let Err(e) = run(&data) {
            panic!("{e}");
        }
        let text = program(&data);
        assert!(
            text.contains("guest-tcp connect 192.0.2.1:1000 send 2000"),
            "{text}"
        );
        let sc = Scenario::parse("fuzz", std::path::Path::new("."), &text).unwrap();
        let r = scenario::run(&sc, &RunOptions::default()).unwrap();
        assert_eq!(r.metrics.bytes, 2000, "{}", r.timeline);
        assert!(r.metrics.completion.is_some(), "{}", r.timeline);
    }
}

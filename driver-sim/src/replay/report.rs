//! What a replay measured, per connection, and the original next to it.

use super::*;

impl Replay {
    /// What happened, per connection, at `now`.
    pub fn report(&self, now: u64) -> Report {
        let mut conns = Vec::new();
        for (c, p) in self.conns.iter().zip(&self.plan.tcp) {
            let g = c.guest.as_ref();
            let bytes = [c.host.read, g.map_or(0, TcpModel::received)];
            let expected = [p.bytes(Side::Guest), p.bytes(Side::Host)];
            let mut stalls = c.stalls.clone();
            if let (Some(ps), None, Some(start)) = (c.pending_since, c.done_at, c.started) {
                let from = ps.max(c.last_progress);
                if now - from > self.plan.stall_ns {
                    stalls.push((from - start, now - from));
                }
            }
            let reset = g.is_some_and(|g| g.state == TcpState::Reset) || c.host.reset;
            let st = g.map(|g| g.stats).unwrap_or_default();
            conns.push(ConnReport {
                id: p.id,
                what: format!("tcp {} > {}", p.guest, p.remote),
                bytes,
                expected,
                complete: c.done_at.is_some() && !reset && bytes == expected,
                failed: c.failed.clone().or_else(|| {
                    reset.then(|| {
                        if g.is_some_and(|g| g.reset_by_peer) {
                            "reset by the core".to_string()
                        } else if c.host.reset {
                            "reset seen by the host".to_string()
                        } else {
                            "the guest gave up (retransmissions)".to_string()
                        }
                    })
                }),
                completion_ns: c.done_at.zip(c.started).map(|(d, s)| d - s),
                stalls,
                retransmits: st.retransmits,
                timeouts: st.timeouts,
                fast_retransmits: st.fast_retransmits,
                probes: st.probes,
                core_retransmits: st.dup_data_in,
                zero_windows: st.zero_windows_in,
                datagrams: None,
            });
        }
        for (r, p) in self.dgrams.iter().zip(&self.plan.dgram) {
            let n = p.steps.len() as u64;
            let finished =
                r.next == p.steps.len() && (r.replies >= n || now >= r.last_t + DGRAM_WAIT_NS);
            let end = r.last_reply.unwrap_or(r.last_t).max(r.last_t);
            conns.push(ConnReport {
                id: p.id,
                what: match p.kind {
                    DgramKind::Udp => format!("udp {} > {}", p.guest, p.remote),
                    DgramKind::Ping(id) => {
                        format!("ping {} > {} id {id}", p.guest.ip(), p.remote.ip())
                    }
                },
                bytes: [0, 0],
                expected: [0, 0],
                complete: finished && r.replies >= n,
                failed: None,
                completion_ns: (finished && r.replies >= n).then(|| end - r.started.unwrap_or(end)),
                stalls: Vec::new(),
                retransmits: 0,
                timeouts: 0,
                fast_retransmits: 0,
                probes: 0,
                core_retransmits: 0,
                zero_windows: 0,
                datagrams: Some((r.sent, r.replies, n)),
            });
        }
        conns.sort_by_key(|c| c.id);
        Report {
            stall_ns: self.plan.stall_ns,
            conns,
        }
    }
}

/// The outcome of one replayed connection or exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnReport {
    /// Its number in the plan.
    pub id: u32,
    /// `tcp GUEST > REMOTE`, `udp ...`, `ping ...`.
    pub what: String,
    /// Bytes delivered: guest to host (read by the host application), host
    /// to guest (received in order by the guest).
    pub bytes: [u64; 2],
    /// Bytes the plan has each side write.
    pub expected: [u64; 2],
    /// Everything delivered, both sides closed, no reset.
    pub complete: bool,
    /// Why it did not finish normally.
    pub failed: Option<String>,
    /// Time from its start to its end (virtual ns).
    pub completion_ns: Option<u64>,
    /// Stalls: (start since the connection's start, length), in ns.
    pub stalls: Vec<(u64, u64)>,
    /// Segments the guest sent again.
    pub retransmits: u64,
    /// Of which after a timeout.
    pub timeouts: u64,
    /// Fast retransmissions by the guest.
    pub fast_retransmits: u64,
    /// Probes of a closed window by the guest.
    pub probes: u64,
    /// Data segments from the core that brought nothing new (sent again).
    pub core_retransmits: u64,
    /// ACKs from the core with a closed window.
    pub zero_windows: u64,
    /// Datagram exchanges: sent, replies, planned.
    pub datagrams: Option<(u64, u64, u64)>,
}

impl ConnReport {
    /// The longest stall (ns).
    pub fn longest_stall(&self) -> u64 {
        self.stalls.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

/// The outcome of a replay.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Report {
    /// The stall threshold (ns).
    pub stall_ns: u64,
    /// Per connection, by number.
    pub conns: Vec<ConnReport>,
}

impl Report {
    /// Whether every connection completed.
    pub fn complete(&self) -> bool {
        self.conns.iter().all(|c| c.complete)
    }

    /// The latest completion (ns), if all completed.
    pub fn completion_ns(&self) -> Option<u64> {
        self.conns
            .iter()
            .map(|c| c.completion_ns)
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max())
    }

    /// Text, one block per connection.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay: stalls are {} ms or more without progress",
            plan::ms(self.stall_ns)
        );
        for c in &self.conns {
            let _ = writeln!(
                s,
                "{} {}: {}",
                c.id,
                c.what,
                if c.complete { "complete" } else { "INCOMPLETE" }
            );
            if let Some(why) = &c.failed {
                let _ = writeln!(s, "  {why}");
            }
            match c.datagrams {
                Some((sent, replies, n)) => {
                    let _ = writeln!(s, "  sent {sent} of {n}, replies {replies}");
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  guest>host {} of {}, host>guest {} of {}",
                        c.bytes[0], c.expected[0], c.bytes[1], c.expected[1]
                    );
                }
            }
            if let Some(t) = c.completion_ns {
                let _ = writeln!(s, "  completed in {} ms", plan::ms(t));
            }
            if c.datagrams.is_none() {
                let _ = writeln!(
                    s,
                    "  stalls {} (longest {} ms), guest retransmits {} (timeouts {}, fast {}), probes {}, core sent again {}, zero windows {}",
                    c.stalls.len(),
                    plan::ms(c.longest_stall()),
                    c.retransmits,
                    c.timeouts,
                    c.fast_retransmits,
                    c.probes,
                    c.core_retransmits,
                    c.zero_windows
                );
                for (at, len) in &c.stalls {
                    let _ = writeln!(
                        s,
                        "  stall at {} ms for {} ms",
                        plan::ms(*at),
                        plan::ms(*len)
                    );
                }
            }
        }
        s
    }
}

/// The original next to the replay, per connection: bytes, completion time,
/// stalls and retransmissions.
pub fn compare(d: &capture::Derived, rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: original and replay (stalls: {} ms or more)",
        d.capture,
        plan::ms(rep.stall_ns)
    );
    for c in &rep.conns {
        let _ = writeln!(s, "{} {}", c.id, c.what);
        if let Some(o) = d.original.get(&c.id) {
            let longest = o.stalls.iter().map(|x| x.1).max().unwrap_or(0);
            let rows = [
                (
                    "guest>host bytes",
                    o.bytes[0].to_string(),
                    c.bytes[0].to_string(),
                ),
                (
                    "host>guest bytes",
                    o.bytes[1].to_string(),
                    c.bytes[1].to_string(),
                ),
                (
                    "time ms",
                    plan::ms(o.duration_ns),
                    c.completion_ns.map_or("-".into(), plan::ms),
                ),
                (
                    "stalls",
                    o.stalls.len().to_string(),
                    c.stalls.len().to_string(),
                ),
                (
                    "longest stall ms",
                    plan::ms(longest),
                    plan::ms(c.longest_stall()),
                ),
                (
                    "guest retransmits",
                    o.retransmits[0].to_string(),
                    c.retransmits.to_string(),
                ),
                (
                    "translator retransmits",
                    o.retransmits[1].to_string(),
                    c.core_retransmits.to_string(),
                ),
                (
                    "end",
                    match o.end {
                        capture::End::Closed => "closed".into(),
                        capture::End::Reset(side) => format!("reset by {side}"),
                        capture::End::Open => "open".into(),
                    },
                    if c.complete {
                        "closed".into()
                    } else {
                        c.failed.clone().unwrap_or_else(|| "unfinished".into())
                    },
                ),
            ];
            let _ = writeln!(s, "  {:<24} {:>14} {:>14}", "", "original", "replay");
            for (k, a, b) in rows {
                let _ = writeln!(s, "  {k:<24} {a:>14} {b:>14}");
            }
        } else if let (Some(o), Some((sent, replies, _))) =
            (d.original_dgram.get(&c.id), c.datagrams)
        {
            let _ = writeln!(
                s,
                "  sent {} replies {} (original) / sent {sent} replies {replies} (replay)",
                o.sent, o.replies
            );
        }
    }
    s
}

//! From a whole capture to a plan and the original's figures, and the
//! scenario text of a replay.

use super::*;

pub(super) fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_broadcast() && !a.is_multicast() && !a.is_unspecified(),
        IpAddr::V6(a) => !a.is_multicast() && !a.is_unspecified(),
    }
}

/// Derives a replay plan from a capture; connections that cannot be
/// replayed are listed in `skipped`.
// Long by design: one pass over the capture's packets: TCP connections, UDP and ping
// exchanges are gathered side by side, then numbered into the plan.
pub fn derive(cap: &Capture, stall_ns: u64) -> Derived {
    let mut plan = Plan {
        stall_ns,
        ..Plan::default()
    };
    let mut original = BTreeMap::new();
    let mut original_dgram = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut forwards = Vec::new();
    let mut echo_ports = Vec::new();
    let mut mtu: Option<u16> = None;
    let mut reactions: Vec<u64> = Vec::new();
    // Everything to replay, with its start time, numbered by start.
    enum Item {
        Tcp(Box<TcpPlan>, Original),
        Dgram(DgramPlan, OriginalDgram),
    }
    let mut items: Vec<(u64, Item)> = Vec::new();
    for tr in cap.traces() {
        match analyze(&tr, stall_ns) {
            Ok(a) => {
                reactions.extend(&a.reactions);
                let mss = a.guest_mss.unwrap_or(536);
                let overhead = if tr.guest.is_ipv4() { 40 } else { 60 };
                let m = mss.saturating_add(overhead);
                if m > 1500 {
                    mtu = Some(mtu.map_or(m, |x| x.max(m)));
                }
                if a.opener == Side::Host && !forwards.contains(&tr.guest.port()) {
                    forwards.push(tr.guest.port());
                }
                let at = match a.opener {
                    Side::Guest => a.start,
                    Side::Host => a.established[1],
                };
                items.push((
                    at,
                    Item::Tcp(
                        Box::new(TcpPlan {
                            id: 0,
                            guest: tr.guest,
                            remote: tr.remote,
                            opener: a.opener,
                            at_ns: at,
                            mss,
                            wscale: a.guest_ws,
                            sack: a.guest_sack,
                            rcvbuf: a.max_guest_win.max(65536).min(u64::from(u32::MAX)) as u32,
                            read_rate: a.read_rate,
                            steps: a.steps,
                        }),
                        a.original,
                    ),
                ));
            }
            Err(why) => skipped.push(format!("TCP {} > {}: {why}", tr.guest, tr.remote)),
        }
    }
    // UDP: the guest's datagrams to unicast destinations other than the
    // core's own services (DHCP, DHCPv6), with the replies they waited for.
    let mut udp: BTreeMap<(SocketAddr, SocketAddr), (DgramPlan, OriginalDgram, u64, u64)> =
        BTreeMap::new();
    let mut pings: BTreeMap<(IpAddr, IpAddr, u16), (DgramPlan, OriginalDgram, u64)> =
        BTreeMap::new();
    // The guest's own addresses: a reply sent elsewhere never reached it.
    let mine: Vec<IpAddr> = cap
        .pkts
        .iter()
        .filter(|p| cap.from_guest(p) && !p.src.ip().is_unspecified())
        .map(|p| p.src.ip())
        .collect();
    for p in &cap.pkts {
        let g = cap.from_guest(p);
        match p.l4 {
            L4::Udp { len } if g => {
                if !is_unicast(p.dst.ip())
                    || [67, 547].contains(&p.dst.port())
                    || [68, 546].contains(&p.src.port())
                {
                    continue;
                }
                let e = udp.entry((p.src, p.dst)).or_insert_with(|| {
                    let (plan, orig) = new_exchange(DgramKind::Udp, p.src, p.dst, p.t);
                    (plan, orig, p.t, p.t)
                });
                let (plan, orig, prev, reply_t) = e;
                let base = (*prev).max(if orig.replies > 0 { *reply_t } else { 0 });
                plan.steps.push(Step {
                    side: Side::Guest,
                    act: Act::Send(u64::from(len)),
                    after: orig.replies,
                    after_fin: false,
                    think_ns: p.t.saturating_sub(base),
                    seq: None,
                });
                orig.sent += 1;
                *prev = p.t;
            }
            L4::Udp { .. } if mine.contains(&p.dst.ip()) => {
                // A reply: to the guest's port, from the remote's port (the
                // source address may differ, as link-local answers do).
                if let Some((_, orig, _, reply_t)) = udp
                    .iter_mut()
                    .find(|(k, _)| {
                        k.0.port() == p.dst.port()
                            && k.1.port() == p.src.port()
                            && k.0.is_ipv4() == p.dst.is_ipv4()
                    })
                    .map(|(_, v)| v)
                {
                    orig.replies += 1;
                    *reply_t = p.t;
                }
            }
            L4::Echo {
                request: true,
                id,
                seq,
                len,
            } if g && is_unicast(p.dst.ip()) => {
                let e = pings
                    .entry((p.src.ip(), p.dst.ip(), id))
                    .or_insert_with(|| {
                        let (plan, orig) = new_exchange(
                            DgramKind::Ping(id),
                            SocketAddr::new(p.src.ip(), 0),
                            SocketAddr::new(p.dst.ip(), 0),
                            p.t,
                        );
                        (plan, orig, p.t)
                    });
                // Ping sends by its own clock: no wait for replies.
                e.0.steps.push(Step {
                    side: Side::Guest,
                    act: Act::Send(u64::from(len)),
                    after: 0,
                    after_fin: false,
                    think_ns: p.t - e.2,
                    seq: Some(seq),
                });
                e.1.sent += 1;
                e.2 = p.t;
            }
            L4::Echo {
                request: false, id, ..
            } if !g => {
                if let Some(e) = pings
                    .iter_mut()
                    .find(|(k, _)| k.0 == p.dst.ip() && k.2 == id)
                    .map(|(_, v)| v)
                {
                    e.1.replies += 1;
                }
            }
            _ => {}
        }
    }
    for (_, (plan, orig, ..)) in udp {
        if !echo_ports.contains(&plan.remote.port()) {
            echo_ports.push(plan.remote.port());
        }
        items.push((plan.at_ns, Item::Dgram(plan, orig)));
    }
    for (_, (plan, orig, _)) in pings {
        items.push((plan.at_ns, Item::Dgram(plan, orig)));
    }
    items.sort_by_key(|i| i.0);
    let t0 = items.first().map_or(0, |i| i.0);
    for (n, (at, item)) in items.into_iter().enumerate() {
        let id = n as u32 + 1;
        match item {
            Item::Tcp(mut c, o) => {
                c.id = id;
                c.at_ns = at - t0;
                plan.tcp.push(*c);
                original.insert(id, o);
            }
            Item::Dgram(mut d, o) => {
                d.id = id;
                d.at_ns = at - t0;
                plan.dgram.push(d);
                original_dgram.insert(id, o);
            }
        }
    }
    reactions.sort_unstable();
    if let Some(m) = reactions.get(reactions.len() / 2) {
        plan.delay_ns = (*m).clamp(1_000, 1_000_000);
    }
    forwards.sort_unstable();
    echo_ports.sort_unstable();
    Derived {
        capture: cap.name.clone(),
        plan,
        original,
        original_dgram,
        mtu,
        forwards,
        echo_ports,
        duration_ns: cap.duration_ns(),
        skipped,
    }
}

impl Derived {
    /// Whether there is nothing to replay.
    pub fn is_empty(&self) -> bool {
        self.plan.tcp.is_empty() && self.plan.dgram.is_empty()
    }

    /// The replay as a scenario file; `capture_path` is how the scenario
    /// names the capture (relative to its folder).
    pub fn scenario_text(&self, capture_path: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Closed-loop replay of `{capture_path}`: each connection's application steps, derived from the capture (`passt-sim derive`), against our core."
        );
        let mut cfg = String::from("sim config capture");
        if let Some(m) = self.mtu {
            let _ = write!(cfg, " mtu={m}");
        }
        for p in &self.forwards {
            let _ = write!(cfg, " forward={p}");
        }
        let _ = writeln!(s, "`{cfg}`");
        for p in &self.echo_ports {
            let _ = writeln!(s, "`sim peer *:{p} echo`");
        }
        // Long enough for every step's thinking and a slow transfer; idle
        // virtual time costs nothing.
        let settle = (self.duration_ns / 1_000_000)
            .saturating_mul(3)
            .saturating_add(10_000);
        let _ = writeln!(s, "`sim settle {settle}`");
        let _ = writeln!(s, "`sim drain-at-end`");
        for w in &self.skipped {
            let _ = writeln!(s, "// not replayed: {w}");
        }
        for c in &self.plan.tcp {
            if let Some(o) = self.original.get(&c.id) {
                let _ = writeln!(s, "// {}: original {}", c.id, o.summary());
            }
        }
        for d in &self.plan.dgram {
            if let Some(o) = self.original_dgram.get(&d.id) {
                let _ = writeln!(
                    s,
                    "// {}: original sent {} replies {}",
                    d.id, o.sent, o.replies
                );
            }
        }
        for l in self.plan.lines() {
            let _ = writeln!(s, "`{l}`");
        }
        let _ = writeln!(s, "`sim replay start`");
        s
    }
}

impl Original {
    /// One line: bytes each way, time, stalls, retransmissions, end.
    pub fn summary(&self) -> String {
        let longest = self.stalls.iter().map(|s| s.1).max().unwrap_or(0);
        format!(
            "guest>host {} host>guest {} in {} ms, {} stalls (longest {} ms), retransmits guest {} host {}, {}",
            self.bytes[0],
            self.bytes[1],
            crate::replay::plan::ms(self.duration_ns),
            self.stalls.len(),
            crate::replay::plan::ms(longest),
            self.retransmits[0],
            self.retransmits[1],
            match self.end {
                End::Closed => "closed".to_string(),
                End::Reset(s) => format!("reset by {s}"),
                End::Open => "open at the end of the capture".to_string(),
            }
        )
    }
}

/// A datagram exchange first seen at `at`: its plan, and the original's
/// figures to count into.
fn new_exchange(
    kind: DgramKind,
    guest: SocketAddr,
    remote: SocketAddr,
    at: u64,
) -> (DgramPlan, OriginalDgram) {
    (
        DgramPlan {
            id: 0,
            kind,
            guest,
            remote,
            at_ns: at,
            steps: Vec::new(),
        },
        OriginalDgram {
            sent: 0,
            replies: 0,
        },
    )
}

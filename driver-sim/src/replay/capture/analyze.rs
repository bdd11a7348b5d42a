//! The walk over one TCP connection of a capture: handshake, per-direction
//! progress, the original's figures, and the application steps cut from it.

use super::*;

// Long by design: a single walk over the connection's segments whose per-direction state
// every phase (handshake, data, ACKs, FIN, stalls) updates; split, each part would take and
// return all of it.
pub(super) fn analyze(tr: &Trace, stall_ns: u64) -> Result<Analysis, String> {
    let syn = tr
        .segs
        .iter()
        .find(|s| s.h.has(flags::SYN) && !s.h.has(flags::ACK))
        .ok_or("no SYN in the capture (the connection started before it)")?;
    let opener = if syn.from_guest {
        Side::Guest
    } else {
        Side::Host
    };
    let syn_of = |g: bool| {
        tr.segs
            .iter()
            .find(|s| s.from_guest == g && s.h.has(flags::SYN))
    };
    let gsyn = syn_of(true).ok_or("the guest never sent its SYN or SYN-ACK")?;
    let hsyn = syn_of(false).ok_or("the translator never sent its SYN or SYN-ACK")?;
    let isn = [gsyn.h.seq, hsyn.h.seq];
    // Window scaling holds only when both SYNs offer it.
    let g_scale = gsyn
        .h
        .opts
        .wscale
        .filter(|_| hsyn.h.opts.wscale.is_some())
        .unwrap_or(0);
    // Established, per side.
    let est_guest = match opener {
        Side::Guest => hsyn.t,
        Side::Host => tr
            .segs
            .iter()
            .find(|s| {
                !s.from_guest
                    && s.t >= gsyn.t
                    && !s.h.has(flags::SYN)
                    && s.h.has(flags::ACK)
                    && s.h.ack == isn[0].wrapping_add(1)
            })
            .map_or(gsyn.t, |s| s.t),
    };
    let established = [est_guest, hsyn.t];
    let start = tr.segs.first().map_or(0, |s| s.t);
    let end_t = tr.segs.last().map_or(0, |s| s.t);

    // First pass: what each side delivered.
    let mut d = [Dir::default(), Dir::default()];
    let mut pending_since: Option<u64> = None;
    let mut last_progress = start;
    let mut stalls = Vec::new();
    let mut rst = None;
    let mut max_guest_win = 0u64;
    let mut reactions: Vec<u64> = Vec::new();
    let mut last_host_data: Option<u64> = None;
    for s in &tr.segs {
        let me = if s.from_guest { 0 } else { 1 };
        let other = 1 - me;
        let h = &s.h;
        let mut progress = false;
        if h.has(flags::RST) {
            rst.get_or_insert((
                if s.from_guest {
                    Side::Guest
                } else {
                    Side::Host
                },
                s.t,
            ));
            continue;
        }
        if h.has(flags::ACK) {
            let a = unwrap(
                h.ack.wrapping_sub(isn[other]).wrapping_sub(1),
                d[other].acked,
            );
            let limit = d[other].max_sent + u64::from(d[other].fin_at.is_some());
            let a = a.min(limit);
            if a > d[other].acked {
                d[other].acked = a;
                d[other].acks.push((s.t, a.min(d[other].max_sent)));
                progress = true;
                if d[other].fin_at.is_some_and(|f| a > f)
                    && d[other].fin_rcvd_t.is_none()
                    && other == 0
                {
                    // The translator acknowledged the guest's FIN: the host
                    // saw the end of the stream.
                    d[0].fin_rcvd_t = Some(s.t);
                }
                if other == 0 {
                    let r = a.min(d[0].max_sent);
                    if r > d[0].rcvd {
                        d[0].rcvd = r;
                        d[0].rcvd_t = s.t;
                    }
                }
            }
            if s.from_guest && !h.has(flags::SYN) {
                max_guest_win = max_guest_win.max(u64::from(h.win) << g_scale);
                if let Some(t) = last_host_data.take() {
                    reactions.push(s.t - t);
                }
            }
        }
        if h.len > 0 {
            let off = unwrap(h.seq.wrapping_sub(isn[me]).wrapping_sub(1), d[me].max_sent);
            let end = off + u64::from(h.len);
            if off < d[me].max_sent {
                d[me].retrans += 1;
            }
            if end > d[me].max_sent {
                if d[me].max_sent <= d[me].acked && pending_since.is_none() {
                    pending_since = Some(s.t);
                }
                d[me].max_sent = end;
            }
            if me == 1 {
                // The guest holds the translator's data now.
                last_host_data = Some(s.t);
                let dir = &mut d[1];
                if off <= dir.rcvd {
                    dir.rcvd = dir.rcvd.max(end);
                    while let Some((&a, &b)) = dir.ooo.iter().next() {
                        if a > dir.rcvd {
                            break;
                        }
                        dir.rcvd = dir.rcvd.max(b);
                        dir.ooo.remove(&a);
                    }
                    dir.rcvd_t = s.t;
                } else {
                    let e = dir.ooo.entry(off).or_insert(end);
                    *e = (*e).max(end);
                }
            }
        }
        if h.has(flags::FIN) && d[me].fin_at.is_none() {
            let at = unwrap(
                h.seq
                    .wrapping_sub(isn[me])
                    .wrapping_sub(1)
                    .wrapping_add(h.len),
                d[me].max_sent,
            );
            d[me].fin_at = Some(at);
            d[me].fin_sent_t = Some(s.t);
            if me == 1 {
                d[1].fin_rcvd_t = Some(s.t);
            }
            if pending_since.is_none() {
                pending_since = Some(s.t);
            }
        }
        if progress {
            if let Some(p) = pending_since {
                let gap = s.t - p.max(last_progress);
                if gap > stall_ns {
                    stalls.push((p.max(last_progress) - start, gap));
                }
            }
            last_progress = s.t;
            let outstanding =
                (0..2).any(|k| d[k].max_sent + u64::from(d[k].fin_at.is_some()) > d[k].acked);
            pending_since = outstanding.then_some(s.t);
        }
    }
    if let Some(p) = pending_since {
        let gap = end_t - p.max(last_progress);
        if gap > stall_ns {
            stalls.push((p.max(last_progress) - start, gap));
        }
    }
    let delivered = [d[0].acked.min(d[0].max_sent), d[1].acked.min(d[1].max_sent)];
    let end = match rst {
        Some((side, _)) => End::Reset(side),
        None if (0..2).all(|k| d[k].fin_at.is_some_and(|f| d[k].acked > f)) => End::Closed,
        None => End::Open,
    };
    let original = Original {
        bytes: delivered,
        undelivered: [d[0].max_sent - delivered[0], d[1].max_sent - delivered[1]],
        duration_ns: end_t - start,
        stalls,
        retransmits: [d[0].retrans, d[1].retrans],
        end,
    };

    // Observed reading rate of the host.
    let read_rate = (delivered[0] >= RATE_MIN_BYTES).then(|| {
        let acks = &d[0].acks;
        let first = acks.first().map_or(0, |a| a.0);
        let last = acks.last().map_or(0, |a| a.0);
        let w = RATE_WINDOW_NS.min(last - first).max(1);
        let mut best = 0u64;
        let mut j = 0;
        let base = |i: usize| if i == 0 { 0 } else { acks[i - 1].1 };
        for i in 0..acks.len() {
            while j + 1 < acks.len() && acks[j + 1].0 <= acks[i].0 + w {
                j += 1;
            }
            j = j.max(i);
            best = best.max(acks[j].1 - base(i));
        }
        // Bytes per millisecond, rounded up.
        (u128::from(best) * 1_000_000).div_ceil(u128::from(w)) as u64
    });

    // Second pass: the steps.
    let steps = cut_steps(tr, isn, established, delivered);
    Ok(Analysis {
        opener,
        established,
        steps,
        original,
        guest_mss: gsyn.h.opts.mss,
        guest_ws: gsyn.h.opts.wscale,
        guest_sack: gsyn.h.opts.sack_ok,
        max_guest_win,
        read_rate,
        start,
        reactions,
    })
}

/// Cuts a connection into application steps (see the module's notes).
// Long by design: a single walk over the segments with the per-side state the step rules
// (see the module's notes) read and update together.
pub(super) fn cut_steps(
    tr: &Trace,
    isn: [u32; 2],
    established: [u64; 2],
    delivered: [u64; 2],
) -> Vec<Step> {
    #[derive(Default, Clone)]
    struct St {
        max_sent: u64,
        acked: u64,
        fin: bool,
        /// Bytes received from the other side, and since when.
        rcvd: u64,
        rcvd_t: u64,
        /// The other side's FIN received, when.
        fin_rcvd: Option<u64>,
        /// Open step (index into `steps`) and what it saw when last extended.
        open: Option<usize>,
        last_tx: u64,
        /// When the other side last acknowledged everything sent.
        all_acked_t: u64,
        rcvd_at_last: u64,
        fin_at_last: bool,
        prev_end: u64,
        closed: bool,
        ooo: BTreeMap<u64, u64>,
    }
    impl St {
        /// A step of this side at `now`: it waits for what the side had
        /// received (and the other side's FIN with `fin_dep`), then thinks
        /// from the latest of that, its previous step, everything sent being
        /// acknowledged and the connection being established.
        fn step(&self, side: Side, act: Act, fin_dep: bool, established: u64, now: u64) -> Step {
            let mut dep_t = if self.rcvd > 0 { self.rcvd_t } else { 0 };
            if fin_dep {
                dep_t = dep_t.max(self.fin_rcvd.unwrap_or(0));
            }
            // Time spent waiting for the translator (its ACKs,
            // retransmissions) is not the application's.
            let base = dep_t
                .max(self.prev_end)
                .max(self.all_acked_t)
                .max(established);
            Step {
                side,
                act,
                after: self.rcvd,
                after_fin: fin_dep,
                think_ns: now.saturating_sub(base),
                seq: None,
            }
        }
    }
    let mut st = [St::default(), St::default()];
    let mut steps: Vec<Step> = Vec::new();
    let sides = [Side::Guest, Side::Host];
    for s in &tr.segs {
        let me = if s.from_guest { 0 } else { 1 };
        let other = 1 - me;
        let h = &s.h;
        if h.has(flags::RST) {
            continue;
        }
        if h.has(flags::ACK) {
            let a = unwrap(
                h.ack.wrapping_sub(isn[other]).wrapping_sub(1),
                st[other].acked,
            );
            let a = a.min(st[other].max_sent + u64::from(st[other].fin));
            if a > st[other].acked {
                st[other].acked = a;
                if a >= st[other].max_sent {
                    st[other].all_acked_t = s.t;
                }
                if me == 1 {
                    // The translator took the guest's bytes: the host has them.
                    let r = a.min(st[0].max_sent).min(delivered[0]);
                    if r > st[1].rcvd {
                        st[1].rcvd = r;
                        st[1].rcvd_t = s.t;
                    }
                    if st[0].fin && a > st[0].max_sent && st[1].fin_rcvd.is_none() {
                        st[1].fin_rcvd = Some(s.t);
                    }
                }
            }
        }
        if h.len > 0 {
            let off = unwrap(h.seq.wrapping_sub(isn[me]).wrapping_sub(1), st[me].max_sent);
            let end = off + u64::from(h.len);
            if me == 1 {
                // The guest receives the translator's bytes now.
                let g = &mut st[0];
                if off <= g.rcvd {
                    let before = g.rcvd;
                    g.rcvd = g.rcvd.max(end.min(delivered[1]));
                    while let Some((&a, &b)) = g.ooo.iter().next() {
                        if a > g.rcvd {
                            break;
                        }
                        g.rcvd = g.rcvd.max(b.min(delivered[1]));
                        g.ooo.remove(&a);
                    }
                    if g.rcvd > before {
                        g.rcvd_t = s.t;
                    }
                } else {
                    let e = g.ooo.entry(off).or_insert(end);
                    *e = (*e).max(end);
                }
            }
            let lo = off.max(st[me].max_sent);
            let hi = end.min(delivered[me]);
            let outstanding = st[me].max_sent > st[me].acked;
            st[me].max_sent = st[me].max_sent.max(end);
            if hi > lo && !st[me].closed {
                let x = &st[me];
                let fin_dep = x.fin_rcvd.is_some_and(|t| t > established[me] && t <= s.t);
                // Idle: nothing in flight, and quiet since the last byte
                // went or was acknowledged, whichever is later.
                let idle = !outstanding
                    && s.t.saturating_sub(x.last_tx.max(x.all_acked_t)) > IDLE_SPLIT_NS;
                let boundary = x.open.is_none()
                    || x.rcvd > x.rcvd_at_last
                    || (fin_dep && !x.fin_at_last)
                    || idle;
                if boundary {
                    steps.push(x.step(
                        sides[me],
                        Act::Send(hi - lo),
                        fin_dep,
                        established[me],
                        s.t,
                    ));
                    st[me].open = Some(steps.len() - 1);
                } else if let Some(Step {
                    act: Act::Send(n), ..
                }) = x.open.and_then(|i| steps.get_mut(i))
                {
                    *n += hi - lo;
                }
                let x = &mut st[me];
                x.last_tx = s.t;
                x.rcvd_at_last = x.rcvd;
                x.fin_at_last = fin_dep;
                x.prev_end = s.t;
            }
        }
        if h.has(flags::FIN) && !st[me].fin {
            st[me].fin = true;
            if me == 1 {
                st[0].fin_rcvd = Some(s.t);
            }
            let x = &st[me];
            let fin_dep = x.fin_rcvd.is_some_and(|t| t > established[me] && t <= s.t);
            steps.push(x.step(sides[me], Act::Close, fin_dep, established[me], s.t));
            let x = &mut st[me];
            x.closed = true;
            x.open = None;
            x.prev_end = s.t;
        }
    }
    // Sides that never closed close once everything was exchanged: the
    // guest first if neither did.
    let closed = [st[0].closed, st[1].closed];
    for (k, side) in sides.iter().enumerate() {
        if !closed[k] {
            let wait_fin = closed[1 - k] || k == 1;
            steps.push(Step {
                side: *side,
                act: Act::Close,
                after: delivered[1 - k],
                after_fin: wait_fin,
                think_ns: 0,
                seq: None,
            });
        }
    }
    steps
}

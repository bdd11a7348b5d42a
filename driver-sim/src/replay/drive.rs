//! Driving both ends of a replay: starting connections, stepping the
//! application steps of each side, datagram exchanges.

use super::*;

impl Replay {
    /// Runs what is due at `now`: starts connections, takes steps, runs the
    /// guest's timers and the host application. Frames for the core go to
    /// `out`; returns whether the kernel's state was touched.
    pub fn poll(&mut self, now: u64, k: &mut Kernel, out: &mut Vec<Vec<u8>>) -> bool {
        let Some(t0) = self.started else { return false };
        let mut touched = false;
        // Listeners for the connections the guest opens, one per port.
        for i in 0..self.conns.len() {
            let p = &self.plan.tcp[i];
            if p.opener == Side::Guest && !self.listeners.contains_key(&p.remote.port()) {
                let port = p.remote.port();
                let fam = if p.remote.is_ipv4() {
                    Family::V4
                } else {
                    Family::V6
                };
                let fd = k.app_socket(true, fam);
                let any = SocketAddr::new(
                    if p.remote.is_ipv4() {
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                    } else {
                        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                    },
                    port,
                );
                let r = k
                    .app_bind(fd, any)
                    .and_then(|()| k.app_listen(fd, 128))
                    .map(|()| fd);
                if let Err(e) = r {
                    let _ = k.app_close(fd);
                    self.notes
                        .push(format!("replay: host listener on port {port}: {e:?}"));
                }
                self.listeners.insert(port, r);
                touched = true;
            }
        }
        // Accepted connections go, in order, to the connections that
        // started towards that port.
        for (&port, l) in &self.listeners {
            let Ok(lfd) = l else { continue };
            while let Ok(fd) = k.app_accept(*lfd) {
                touched = true;
                let slot = self.conns.iter_mut().zip(&self.plan.tcp).find(|(c, p)| {
                    p.opener == Side::Guest
                        && p.remote.port() == port
                        && c.started.is_some()
                        && c.host.fd.is_none()
                        && c.host.closed == c.host.reset
                });
                match slot {
                    Some((c, p)) => {
                        c.host.fd = Some(fd);
                        c.host_est = Some(now);
                        self.notes.push(format!("replay {}: host accepted", p.id));
                    }
                    None => {
                        let _ = k.app_close(fd);
                        self.notes.push(format!(
                            "replay: host listener on port {port}: unexpected connection closed"
                        ));
                    }
                }
            }
        }
        for i in 0..self.conns.len() {
            touched |= self.poll_conn(i, now, t0, k, out);
        }
        // A listener goes once every connection to its port is over.
        for (&port, l) in &mut self.listeners {
            let over = self.conns.iter().zip(&self.plan.tcp).all(|(c, p)| {
                p.opener != Side::Guest
                    || p.remote.port() != port
                    || c.done_at.is_some()
                    || c.failed.is_some()
            });
            if let (true, Ok(fd)) = (over, *l) {
                let _ = k.app_close(fd);
                *l = Err(Errno::EBADF);
                touched = true;
            }
        }
        for i in 0..self.dgrams.len() {
            self.poll_dgram(i, now, t0);
        }
        while self.outq.front().is_some_and(|f| f.0 <= now) {
            if let Some((_, f)) = self.outq.pop_front() {
                out.push(f);
            }
        }
        touched
    }

    fn opts(&self, p: &TcpPlan) -> TcpOpts {
        TcpOpts {
            mss: p.mss,
            wscale: p.wscale,
            sack: p.sack,
            rcvbuf: p.rcvbuf,
            delay: self.plan.delay_ns,
            seed: u64::from(p.id),
        }
    }

    fn start_conn(&mut self, i: usize, now: u64, k: &mut Kernel) -> bool {
        let p = self.plan.tcp[i].clone();
        // Connections to one port are opened one after the other, so that
        // the host tells them apart by the order they arrive in.
        let port_of = |q: &TcpPlan| match q.opener {
            Side::Guest => (Side::Guest, q.remote.port()),
            Side::Host => (Side::Host, q.guest.port()),
        };
        let busy = self.conns.iter().zip(&self.plan.tcp).take(i).any(|(c, q)| {
            port_of(q) == port_of(&p)
                && c.done_at.is_none()
                && c.failed.is_none()
                && (c.started.is_none()
                    || c.guest
                        .as_ref()
                        .is_none_or(|g| g.established_at.is_none() && g.state != TcpState::Reset))
        });
        if busy {
            return false;
        }
        let o = self.opts(&p);
        let c = &mut self.conns[i];
        c.started = Some(now);
        c.blocked = false;
        c.last_progress = now;
        self.notes.push(format!(
            "replay {}: {} opens {} > {}",
            p.id, p.opener, p.guest, p.remote
        ));
        match p.opener {
            Side::Guest => {
                c.guest = Some(TcpModel::connect(
                    now,
                    p.guest,
                    p.remote,
                    self.guest_mac,
                    self.our_mac,
                    o,
                ));
                false
            }
            Side::Host => {
                c.guest = Some(TcpModel::listen(p.guest, self.guest_mac, self.our_mac, o));
                let (fam, lo) = if p.guest.is_ipv4() {
                    (Family::V4, IpAddr::V4(Ipv4Addr::LOCALHOST))
                } else {
                    (Family::V6, IpAddr::V6(Ipv6Addr::LOCALHOST))
                };
                let fd = k.app_socket(true, fam);
                // From the recorded port on loopback, as the original client
                // (the core shows loopback as the gateway).
                let _ = k.app_bind(fd, SocketAddr::new(lo, p.remote.port()));
                match k.app_connect(fd, SocketAddr::new(lo, p.guest.port()), Netns::Host) {
                    Ok(()) => {
                        c.host.fd = Some(fd);
                        c.host_est = Some(now);
                    }
                    Err(e) => {
                        let _ = k.app_close(fd);
                        c.failed = Some(format!(
                            "the host's connect failed: {e:?} (port {} not forwarded?)",
                            p.guest.port()
                        ));
                        self.notes
                            .push(format!("replay {}: host connect: {e:?}", p.id));
                    }
                }
                true
            }
        }
    }

    // Long by design: advances one replayed connection through its phases (connect or
    // accept, both sides' steps, reads at the recorded rate, close) on the same connection
    // state.
    fn poll_conn(
        &mut self,
        i: usize,
        now: u64,
        t0: u64,
        k: &mut Kernel,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        let mut touched = false;
        if self.conns[i].done_at.is_some() || self.conns[i].failed.is_some() {
            // Keep answering: the core may send its FIN or data again.
            if let Some(g) = self.conns[i].guest.as_mut() {
                g.on_timer(now);
                g.take_frames(now, out);
            }
            return false;
        }
        if self.conns[i].started.is_none() {
            if now < t0 + self.plan.tcp[i].at_ns {
                return touched;
            }
            touched |= self.start_conn(i, now, k);
            if self.conns[i].started.is_none() {
                // Waits for an earlier connection to the same port: its
                // progress wakes us.
                self.conns[i].blocked = true;
                return touched;
            }
        }
        let p = &self.plan.tcp[i];
        let c = &mut self.conns[i];
        c.wake = None;
        for _round in 0..4 {
            let mut acted = false;
            for side in [Side::Guest, Side::Host] {
                acted |= step_side(c, p, side, now, &mut self.notes);
            }
            let did = c.host.poll(now, k);
            touched |= did;
            acted |= did;
            // Writes in progress end once all their bytes went out.
            for side in [Side::Guest, Side::Host] {
                let s = si(side);
                if let Some(target) = c.writing[s] {
                    let sent = match side {
                        Side::Guest => c.guest.as_ref().map_or(0, TcpModel::sent),
                        Side::Host => c.host.written,
                    };
                    if sent >= target {
                        c.writing[s] = None;
                        c.prev_end[s] = now;
                        acted = true;
                    }
                }
            }
            if !acted {
                break;
            }
        }
        if let Some(g) = c.guest.as_mut() {
            g.on_timer(now);
            g.take_frames(now, out);
        }
        // Progress and stalls.
        let (g_acked, g_rcvd, g_fins) = c.guest.as_ref().map_or((0, 0, 0), |g| {
            (
                g.acked(),
                g.received(),
                u8::from(g.fin_acked())
                    + 2 * u8::from(g.peer_fin())
                    + 4 * u8::from(g.established_at.is_some()),
            )
        });
        let key = (
            g_acked,
            g_rcvd,
            c.host.read,
            g_fins + 8 * u8::from(c.host.eof),
        );
        let pending = c.guest.as_ref().is_some_and(|g| {
            g.established_at.is_none()
                || g.sending()
                || c.host.written > g.received()
                || (c.host.shut && !g.peer_fin())
        }) || c.host.to_write > 0;
        if key != c.progress_key {
            c.progress_key = key;
            if let Some(ps) = c.pending_since {
                let from = ps.max(c.last_progress);
                if now - from > self.plan.stall_ns {
                    let start = c.started.unwrap_or(0);
                    c.stalls.push((from - start, now - from));
                    self.notes.push(format!(
                        "replay {}: stall of {} ms",
                        p.id,
                        plan::ms(now - from)
                    ));
                }
            }
            c.last_progress = now;
            c.pending_since = pending.then_some(now);
        } else if pending && c.pending_since.is_none() {
            c.pending_since = Some(now);
        } else if !pending {
            c.pending_since = None;
        }
        // The end.
        let all_steps = c.next[0] == c.steps[0].len() && c.next[1] == c.steps[1].len();
        let g_done = c.guest.as_ref().is_some_and(TcpModel::done);
        let g_reset = c.guest.as_ref().is_some_and(|g| g.state == TcpState::Reset);
        if (g_reset || c.host.reset) && !c.host.closed {
            if let Some(fd) = c.host.fd {
                let _ = k.app_close(fd);
                touched = true;
            }
            c.host.closed = true;
        }
        if (g_done && c.host.closed && all_steps) || g_reset || c.host.reset {
            c.done_at = Some(now);
            let start = c.started.unwrap_or(now);
            let how = if g_reset || c.host.reset {
                "reset"
            } else {
                "done"
            };
            self.notes.push(format!(
                "replay {}: {how} after {} ms",
                p.id,
                plan::ms(now - start)
            ));
        }
        touched
    }

    fn poll_dgram(&mut self, i: usize, now: u64, t0: u64) {
        let p = &self.plan.dgram[i];
        let r = &mut self.dgrams[i];
        r.wake = None;
        if r.started.is_none() {
            if now < t0 + p.at_ns {
                return;
            }
            r.started = Some(now);
            r.last_t = now;
        }
        while let Some(s) = p.steps.get(r.next) {
            if r.replies < s.after {
                r.dep_t = None;
                break;
            }
            let dep = *r.dep_t.get_or_insert(now);
            let base = if s.after > 0 {
                dep.max(r.last_t)
            } else {
                r.last_t
            };
            let due = base + s.think_ns;
            if now < due {
                r.wake = Some(due);
                break;
            }
            let len = s.act_len();
            let f = match p.kind {
                DgramKind::Udp => {
                    let payload: Vec<u8> = (0..len)
                        .map(|k| crate::kernel::pattern(u64::from(p.id), 8, k as u64))
                        .collect();
                    frame::udp_frame(self.guest_mac, self.our_mac, p.guest, p.remote, &payload)
                }
                DgramKind::Ping(id) => frame::echo_request(
                    self.guest_mac,
                    self.our_mac,
                    p.guest.ip(),
                    p.remote.ip(),
                    id,
                    s.seq.unwrap_or(r.next as u16 + 1),
                    len,
                ),
            };
            let at = (now + self.plan.delay_ns).max(self.outq.back().map_or(0, |f| f.0));
            self.outq.push_back((at, f));
            r.sent += 1;
            r.next += 1;
            r.dep_t = None;
            r.last_t = now;
        }
    }
}
impl plan::Step {
    fn act_len(&self) -> usize {
        match self.act {
            Act::Send(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Act::Close => 0,
        }
    }
}

/// Takes the next steps of `side` that are due; returns whether it did.
fn step_side(c: &mut ConnRun, p: &TcpPlan, side: Side, now: u64, notes: &mut Vec<String>) -> bool {
    let s = si(side);
    let mut acted = false;
    loop {
        if c.writing[s].is_some() {
            break;
        }
        let Some(&idx) = c.steps[s].get(c.next[s]) else {
            break;
        };
        let step = p.steps[idx];
        let est = match side {
            Side::Guest => c.guest.as_ref().and_then(|g| g.established_at),
            Side::Host => c.host_est.filter(|_| c.host.fd.is_some()),
        };
        let Some(est) = est else { break };
        let (rcvd, fin) = match side {
            Side::Guest => c
                .guest
                .as_ref()
                .map_or((0, false), |g| (g.received(), g.peer_fin())),
            Side::Host => (c.host.read, c.host.eof),
        };
        if rcvd < step.after || (step.after_fin && !fin) {
            c.dep_t[s] = None;
            break;
        }
        let dep = *c.dep_t[s].get_or_insert(now);
        let dep = if step.after > 0 || step.after_fin {
            dep
        } else {
            0
        };
        let due = dep.max(c.prev_end[s]).max(est) + step.think_ns;
        if now < due {
            c.wake = Some(c.wake.map_or(due, |w| w.min(due)));
            break;
        }
        match (side, step.act) {
            (Side::Guest, Act::Send(n)) => {
                if let Some(g) = c.guest.as_mut() {
                    g.write(now, n);
                    c.writing[s] = Some(g.written());
                }
            }
            (Side::Guest, Act::Close) => {
                if let Some(g) = c.guest.as_mut() {
                    g.close(now);
                }
                c.prev_end[s] = now;
            }
            (Side::Host, Act::Send(n)) => {
                c.host.to_write += n;
                c.writing[s] = Some(c.host.written + c.host.to_write);
            }
            (Side::Host, Act::Close) => {
                c.host.shut_pending = true;
                c.prev_end[s] = now;
            }
        }
        if p.steps.len() <= 64 || matches!(step.act, Act::Close) {
            notes.push(format!(
                "replay {}: {side} {}",
                p.id,
                match step.act {
                    Act::Send(n) => format!("writes {n}"),
                    Act::Close => "closes".into(),
                }
            ));
        }
        c.next[s] += 1;
        c.dep_t[s] = None;
        acted = true;
    }
    acted
}

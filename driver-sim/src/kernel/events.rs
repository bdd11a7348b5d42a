//! Readiness: the epoll mask of a socket, edge- and level-triggered reports,
//! and the kernel's own timers.

use super::*;

impl Kernel {
    // --- readiness ------------------------------------------------------------

    fn mask(&self, h: usize) -> u8 {
        let Some(s) = self.sock(h) else { return 0 };
        match s.kind {
            Kind::Listener => {
                if s.backlog.is_empty() {
                    0
                } else {
                    ready::IN
                }
            }
            Kind::Udp | Kind::Ping => {
                ready::OUT
                    | if s.dgrams.is_empty() { 0 } else { ready::IN }
                    | if s.errq.is_empty() { 0 } else { ready::ERR }
            }
            Kind::Stream => {
                if s.state != State::Connected {
                    return 0;
                }
                let Some((ci, side)) = s.conn else { return 0 };
                let Some(c) = self.conns.get(ci).and_then(Option::as_ref) else {
                    return 0;
                };
                if c.reset {
                    let e = if c.err[side].is_some() { ready::ERR } else { 0 };
                    return e | ready::HUP | ready::IN | ready::RDHUP;
                }
                let inp = &c.pipes[1 - side];
                let out = &c.pipes[side];
                let mut m = 0;
                if !inp.rcv.is_empty() || inp.eof() {
                    m |= ready::IN;
                }
                if inp.eof() {
                    m |= ready::RDHUP;
                }
                if !s.shut_wr && out.writable() {
                    m |= ready::OUT;
                }
                if inp.eof() && s.shut_wr {
                    m |= ready::HUP;
                }
                m
            }
        }
    }

    fn gen_of(&self, h: usize) -> u64 {
        let Some(s) = self.sock(h) else { return 0 };
        let cg = s
            .conn
            .and_then(|(ci, _)| self.conns.get(ci).and_then(Option::as_ref))
            .map_or(0, |c| c.gen[s.conn.map_or(0, |x| x.1)]);
        s.gen.wrapping_add(cg.wrapping_mul(1 << 20))
    }

    /// Readiness events for the core's sockets, as epoll would report them now,
    /// in socket order. Edge-triggered sockets report only changes.
    // Long by design: one pass over every socket computing epoll's mask with its edge- and
    // level-triggered rules; the cases share the mask and generation bookkeeping.
    pub fn ready_events(&mut self) -> Vec<(SockId, SockEvent)> {
        let mut out = Vec::new();
        let ids: Vec<(SockId, usize)> = self.by_core.iter().map(|(k, v)| (*k, *v)).collect();
        for (id, h) in ids {
            let Some(interest) = self.sock(h).and_then(|s| s.interest) else {
                continue;
            };
            let mask = self.mask(h);
            let gen = self.gen_of(h);
            let mut want = ready::ERR | ready::HUP;
            if interest.readable {
                want |= ready::IN;
            }
            if interest.writable {
                want |= ready::OUT;
            }
            if interest.read_hangup {
                want |= ready::RDHUP;
            }
            let stream = self.sock(h).is_some_and(|s| s.kind == Kind::Stream);
            // Freed room wakes a stream socket only if a poll found it not
            // writable, or a write did not fit (Linux's SOCK_NOSPACE), and
            // only once it is writable again.
            let nospace = self.sock(h).is_some_and(|s| s.nospace);
            let write_space = stream && nospace && mask & ready::OUT != 0;
            if write_space {
                if let Some(s) = self.sock_mut(h) {
                    s.nospace = false;
                }
            }
            let mut m = mask & want;
            let (last_mask, last_gen) = self.sock(h).map_or((0, u64::MAX), |s| s.reported);
            // A poll of the socket: level-triggered ones at every wait, an
            // edge-triggered one after `epoll_ctl` or a wake-up.
            let polled = !interest.edge || last_gen != gen || write_space;
            if polled && interest.writable && stream && mask & ready::OUT == 0 {
                if let Some(s) = self.sock_mut(h) {
                    s.nospace = true;
                }
            }
            if m == 0 {
                if let Some(s) = self.sock_mut(h) {
                    s.reported = (0, gen);
                }
                continue;
            }
            if interest.edge {
                if last_gen == gen {
                    m &= !last_mask;
                    if stream {
                        // Room alone wakes nobody: only the write-space
                        // wake-up above.
                        m &= !ready::OUT;
                        if write_space && interest.writable {
                            m |= ready::OUT;
                        }
                    }
                }
                if m == 0 {
                    continue;
                }
            }
            if let Some(s) = self.sock_mut(h) {
                s.reported = (mask & want, gen);
            }
            let dgram = self
                .sock(h)
                .is_some_and(|s| s.kind == Kind::Udp || s.kind == Kind::Ping);
            if m & ready::ERR != 0 && dgram {
                // One event per error drained from the error queue.
                let errs: Vec<Errno> = self
                    .sock_mut(h)
                    .map(|s| s.errq.drain(..).collect())
                    .unwrap_or_default();
                self.mutations += 1;
                for e in errs {
                    out.push((id, SockEvent::Error(e)));
                }
            } else if m & ready::ERR != 0 {
                let e = self
                    .sock(h)
                    .and_then(|s| s.conn)
                    .and_then(|(ci, side)| {
                        self.conns
                            .get(ci)
                            .and_then(Option::as_ref)
                            .and_then(|c| c.err[side])
                    })
                    .unwrap_or(Errno::ECONNRESET);
                out.push((id, SockEvent::Error(e)));
            }
            if m & ready::IN != 0 {
                out.push((id, SockEvent::Readable));
            }
            if m & ready::OUT != 0 {
                out.push((id, SockEvent::Writable));
            }
            if m & ready::RDHUP != 0 {
                out.push((id, SockEvent::ReadHangUp));
            }
            if m & ready::HUP != 0 {
                out.push((id, SockEvent::HangUp));
            }
        }
        out
    }

    // --- time -----------------------------------------------------------------

    /// The next time the kernel has something to do, in ns.
    pub fn next_deadline(&self) -> Option<u64> {
        let t = self.timers.iter().map(|t| t.0).min();
        let p = self.peers.iter().filter_map(|p| p.next_tick).min();
        let f = self
            .peers
            .iter()
            .filter_map(|p| p.fast_at.filter(|&t| t > self.now))
            .min();
        let q = self
            .conns
            .iter()
            .flatten()
            .filter(|c| !c.reset)
            .flat_map(|c| c.pipes.iter().filter_map(Pipe::next_deadline))
            .min();
        let busy = self.peers_busy.then_some(self.now);
        [t, p, f, q, busy].into_iter().flatten().min()
    }

    /// Runs timers due at `now` and lets the peers act. Returns the events
    /// for the core (connect outcomes).
    pub fn advance(&mut self, now: u64) -> Vec<(SockId, SockEvent)> {
        self.set_now(now);
        self.pump_all();
        let mut out = Vec::new();
        let mut due: Vec<_> = Vec::new();
        self.timers.retain(|t| {
            if t.0 <= now {
                due.push(*t);
                false
            } else {
                true
            }
        });
        due.sort_by_key(|t| (t.0, t.1));
        for (_, _, t) in due {
            match t {
                Timer::ConnectDone(h, res) => {
                    let Some(s) = self.sock_mut(h) else { continue };
                    let Owner::Core(id) = s.owner else { continue };
                    if s.state != State::Connecting {
                        continue;
                    }
                    s.state = if res.is_ok() {
                        State::Connected
                    } else {
                        State::Fresh
                    };
                    self.mutations += 1;
                    out.push((id, SockEvent::Connected(res)));
                }
            }
        }
        for p in &mut self.peers {
            if p.next_tick.is_some_and(|t| t <= now) {
                p.next_tick = None;
            }
        }
        self.run_peers(now);
        out
    }
}

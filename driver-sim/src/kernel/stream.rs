//! TCP sockets of the core: bind, listen, connect, accept, socket options,
//! send, peek, consume, TCP_INFO, shutdown and close.

use super::*;

impl Kernel {
    // --- the core's side ----------------------------------------------------

    /// `socket()`.
    pub fn open(
        &mut self,
        id: SockId,
        kind: SockKind,
        family: Family,
        netns: Netns,
    ) -> Result<(), Errno> {
        if self.by_core.contains_key(&id) {
            return err(Errno::EBADF);
        }
        if self.by_core.len() >= self.cfg.fd_limit {
            return err(Errno::EMFILE);
        }
        let kind = match kind {
            SockKind::TcpStream => Kind::Stream,
            SockKind::TcpListener => Kind::Listener,
            SockKind::Udp => Kind::Udp,
            SockKind::Ping => Kind::Ping,
            _ => return err(Errno::EPERM),
        };
        let h = self.new_sock(Owner::Core(id), kind, family, netns);
        self.by_core.insert(id, h);
        Ok(())
    }

    /// `bind()`.
    pub fn bind(&mut self, id: SockId, addr: SocketAddr, reuse: bool) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.bind_handle(h, addr, reuse)
    }

    pub(super) fn bind_handle(
        &mut self,
        h: usize,
        addr: SocketAddr,
        reuse: bool,
    ) -> Result<(), Errno> {
        let (kind, netns) = {
            let s = self.sock(h).ok_or(Errno::EBADF)?;
            (s.kind, s.netns)
        };
        let clash = self.socks.iter().enumerate().any(|(i, o)| {
            o.as_ref().is_some_and(|s| {
                i != h
                    && s.netns == netns
                    && (s.kind == Kind::Udp) == (kind == Kind::Udp)
                    && s.local.is_some_and(|l| {
                        l.port() == addr.port()
                            && addr.port() != 0
                            && (l.ip() == addr.ip()
                                || l.ip().is_unspecified()
                                || addr.ip().is_unspecified())
                            && !(reuse && s.reuse_addr && s.state != State::Listening)
                    })
            })
        });
        if clash {
            return err(Errno::EADDRINUSE);
        }
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        let mut addr = addr;
        if kind == Kind::Ping && addr.port() == 0 {
            // Linux picks the echo identifier of a ping socket bound to port 0.
            addr.set_port(ping_id(h));
        }
        s.local = Some(addr);
        s.reuse_addr = reuse;
        Ok(())
    }

    /// `listen()`.
    pub fn listen(&mut self, id: SockId, backlog: u32) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.listen_handle(h, backlog)
    }

    pub(super) fn listen_handle(&mut self, h: usize, backlog: u32) -> Result<(), Errno> {
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        if s.kind != Kind::Listener && s.kind != Kind::Stream {
            return err(Errno::EPERM);
        }
        s.kind = Kind::Listener;
        s.state = State::Listening;
        s.backlog_max = backlog.max(1) as usize;
        Ok(())
    }

    pub(super) fn make_conn(&mut self, a: usize, b: usize) -> usize {
        let (a_snd, a_rcv) = self.sock(a).map_or((0, 0), |s| (s.sndbuf, s.rcvbuf));
        let (b_snd, b_rcv) = self.sock(b).map_or((0, 0), |s| (s.sndbuf, s.rcvbuf));
        let c = Conn {
            id: self.next_conn,
            pipes: [
                Pipe {
                    snd_cap: a_snd as usize,
                    rcv_cap: b_rcv as usize,
                    ..Default::default()
                },
                Pipe {
                    snd_cap: b_snd as usize,
                    rcv_cap: a_rcv as usize,
                    ..Default::default()
                },
            ],
            ends: [Some(a), Some(b)],
            reset: false,
            err: [None, None],
            gen: [0, 0],
        };
        self.next_conn += 1;
        let ci = if let Some(i) = self.conns.iter().position(Option::is_none) {
            self.conns[i] = Some(c);
            i
        } else {
            self.conns.push(Some(c));
            self.conns.len() - 1
        };
        if let Some(s) = self.sock_mut(a) {
            s.conn = Some((ci, 0));
            s.state = State::Connected;
        }
        if let Some(s) = self.sock_mut(b) {
            s.conn = Some((ci, 1));
            s.state = State::Connected;
        }
        self.mutations += 1;
        ci
    }

    fn add_timer(&mut self, at: u64, t: Timer) {
        self.timer_order += 1;
        self.timers.push((at, self.timer_order, t));
    }

    pub(super) fn find_listener(
        &self,
        netns: Netns,
        dst: SocketAddr,
        core_owned: bool,
    ) -> Option<usize> {
        self.socks.iter().position(|o| {
            o.as_ref().is_some_and(|s| {
                s.state == State::Listening
                    && s.netns == netns
                    && matches!(s.owner, Owner::Core(_)) == core_owned
                    && s.local.is_some_and(|l| {
                        l.port() == dst.port()
                            && (l.ip() == dst.ip()
                                || l.ip().is_unspecified()
                                || (l.ip().is_loopback() && dst.ip().is_loopback()))
                    })
            })
        })
    }

    /// A non-blocking `connect()` at virtual time `now` (ns). The outcome is
    /// reported later by [`Self::advance`] as `SockEvent::Connected`.
    // Long by design: one branch per outcome Linux gives a non-blocking connect (listener
    // found, refused, unreachable, timed out, delayed), all setting up the same connection
    // state.
    pub fn connect(&mut self, id: SockId, addr: SocketAddr, now: u64) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        let (kind, netns, family) = {
            let s = self.sock(h).ok_or(Errno::EBADF)?;
            (s.kind, s.netns, s.family)
        };
        if let Some(s) = self.sock_mut(h) {
            s.remote = Some(addr);
            if s.local.is_none() {
                s.local = Some(SocketAddr::new(
                    if family == Family::V4 {
                        IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1))
                    } else {
                        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 1))
                    },
                    (40000 + h % 20000) as u16,
                ));
            }
        }
        match kind {
            Kind::Udp | Kind::Ping => {
                if let Some(s) = self.sock_mut(h) {
                    s.state = State::Connected;
                }
                return Ok(());
            }
            Kind::Listener => return err(Errno::EPERM),
            Kind::Stream => {}
        }
        if let Some(s) = self.sock_mut(h) {
            s.state = State::Connecting;
        }
        // A listening application first, then the peer models.
        if let Some(l) = self.find_listener(netns, addr, false) {
            let full = self
                .sock(l)
                .is_some_and(|s| s.backlog.len() >= s.backlog_max);
            if full {
                self.add_timer(
                    now + self.cfg.connect_timeout_ns,
                    Timer::ConnectDone(h, Err(Errno::ETIMEDOUT)),
                );
                return Ok(());
            }
            let peer_side = self.new_sock(Owner::Pending, Kind::Stream, family, netns);
            if let Some(s) = self.sock_mut(peer_side) {
                s.local = Some(addr);
            }
            let local = self.sock(h).and_then(|s| s.local);
            if let Some(s) = self.sock_mut(peer_side) {
                s.remote = local;
            }
            self.make_conn(h, peer_side);
            if let Some(s) = self.sock_mut(h) {
                s.state = State::Connecting;
            }
            if let Some(s) = self.sock_mut(l) {
                s.backlog.push_back(peer_side);
                s.gen += 1;
            }
            self.add_timer(now, Timer::ConnectDone(h, Ok(())));
            return Ok(());
        }
        let spec = self.cfg.peer_for(addr);
        let at = now + spec.connect_delay_ns;
        match spec.model {
            PeerModel::Refuse => {
                self.add_timer(at, Timer::ConnectDone(h, Err(Errno::ECONNREFUSED)))
            }
            PeerModel::Unreachable => {
                self.add_timer(at, Timer::ConnectDone(h, Err(Errno::EHOSTUNREACH)))
            }
            PeerModel::Blackhole => self.add_timer(
                now + self.cfg.connect_timeout_ns,
                Timer::ConnectDone(h, Err(Errno::ETIMEDOUT)),
            ),
            model => {
                let ps = self.new_sock(
                    Owner::Peer(self.peers.len()),
                    Kind::Stream,
                    family,
                    Netns::Host,
                );
                if let Some(s) = self.sock_mut(ps) {
                    s.local = Some(addr);
                }
                self.peers.push(Peer::new(model, ps, spec.fast_at_ns));
                let ci = self.make_conn(h, ps);
                if let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) {
                    c.pipes[0].rtt = spec.rtt_ns;
                    c.pipes[1].rtt = spec.rtt_ns;
                }
                if let Some(s) = self.sock_mut(h) {
                    s.state = State::Connecting;
                }
                self.add_timer(at, Timer::ConnectDone(h, Ok(())));
                self.notes.push(format!("peer {addr} ({model}) answers"));
            }
        }
        Ok(())
    }

    /// `accept()` on the core's listener, naming the new socket `id`.
    pub fn accept(
        &mut self,
        listener: SockId,
        id: SockId,
    ) -> Result<(SocketAddr, SocketAddr), Errno> {
        let l = self.core_handle(listener)?;
        if self.by_core.contains_key(&id) {
            return err(Errno::EBADF);
        }
        let empty = self.sock(l).is_none_or(|s| s.backlog.is_empty());
        if empty {
            return err(Errno::EAGAIN);
        }
        if self.by_core.len() >= self.cfg.fd_limit {
            return err(Errno::EMFILE);
        }
        let Some(h) = self.sock_mut(l).and_then(|s| s.backlog.pop_front()) else {
            return err(Errno::EAGAIN);
        };
        self.mutations += 1;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.owner = Owner::Core(id);
        let peer = s
            .remote
            .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        let local = s
            .local
            .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        self.by_core.insert(id, h);
        Ok((peer, local))
    }

    /// `setsockopt(SO_SNDBUF)`: the payload the send buffer holds.
    pub fn set_sndbuf(&mut self, id: SockId, v: u32) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.set_buf(h, Some(v), None)
    }

    /// SO_RCVBUF.
    pub fn set_rcvbuf(&mut self, id: SockId, v: u32) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.set_buf(h, None, Some(v))
    }

    pub(super) fn set_buf(
        &mut self,
        h: usize,
        snd: Option<u32>,
        rcv: Option<u32>,
    ) -> Result<(), Errno> {
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        // Linux reserves twice the value for its own accounting (payload
        // plus per-buffer overhead, what the model counts for the send
        // buffer); the receive buffer is modelled as payload.
        if let Some(v) = snd {
            s.sndbuf = v.max(2304).saturating_mul(2);
        }
        if let Some(v) = rcv {
            s.rcvbuf = v.max(1152);
        }
        let (sb, rb, conn) = (s.sndbuf, s.rcvbuf, s.conn);
        if let Some((ci, side)) = conn {
            if let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) {
                c.pipes[side].snd_cap = sb as usize;
                c.pipes[1 - side].rcv_cap = rb as usize;
            }
        }
        self.pump_all();
        Ok(())
    }

    /// SO_PEEK_OFF.
    pub fn set_peek_off(&mut self, id: SockId, v: u32) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.peek_off = Some(v);
        Ok(())
    }

    /// SO_LINGER on with a zero timeout: closing the socket resets its peer.
    pub fn set_linger_zero(&mut self, id: SockId) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.linger_zero = true;
        Ok(())
    }

    /// The epoll interest of a socket. Like `EPOLL_CTL_MOD`, this re-arms
    /// edge-triggered readiness: a socket ready now is reported again.
    pub fn set_interest(&mut self, id: SockId, i: Interest) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.interest = Some(i);
        s.reported = (0, u64::MAX);
        Ok(())
    }

    /// Takes a socket of the core out of the readiness set altogether (no
    /// error or hang-up reported either), as `EPOLL_CTL_DEL` does.
    pub fn clear_interest(&mut self, id: SockId) {
        if let Some(s) = self.core_handle(id).ok().and_then(|h| self.sock_mut(h)) {
            s.interest = None;
        }
    }

    pub(super) fn conn_side(&self, h: usize) -> Result<(usize, usize), Errno> {
        let s = self.sock(h).ok_or(Errno::EBADF)?;
        s.conn.ok_or(Errno::EBADF)
    }

    pub(super) fn take_err(&mut self, ci: usize, side: usize) -> Option<Errno> {
        let c = self.conns.get_mut(ci)?.as_mut()?;
        c.err[side].take()
    }

    /// A non-blocking `send()` of `data` on a connected stream.
    pub fn send(&mut self, id: SockId, data: &[u8]) -> Result<usize, Errno> {
        let h = self.core_handle(id)?;
        self.send_handle(h, data)
    }

    pub(super) fn send_handle(&mut self, h: usize, data: &[u8]) -> Result<usize, Errno> {
        let (state, shut) = {
            let s = self.sock(h).ok_or(Errno::EBADF)?;
            (s.state, s.shut_wr)
        };
        if state == State::Connecting {
            return err(Errno::EAGAIN);
        }
        let (ci, side) = self.conn_side(h).map_err(|_| Errno::EPIPE)?;
        if let Some(e) = self.take_err(ci, side) {
            return Err(e);
        }
        let c = self
            .conns
            .get_mut(ci)
            .and_then(Option::as_mut)
            .ok_or(Errno::EPIPE)?;
        if c.reset || shut {
            return err(Errno::EPIPE);
        }
        if c.ends[1 - side].is_none() {
            // The other end is gone: its kernel answers with a reset.
            c.reset = true;
            c.gen[0] += 1;
            c.gen[1] += 1;
            self.mutations += 1;
            return err(Errno::EPIPE);
        }
        let p = &mut c.pipes[side];
        let n = p.snd_take(data.len());
        let short = n < data.len();
        if n == 0 && !data.is_empty() {
            if let Some(s) = self.sock_mut(h) {
                s.nospace = true;
            }
            return err(Errno::EAGAIN);
        }
        p.snd.extend(&data[..n]);
        p.log.extend_from_slice(&data[..n]);
        self.mutations += 1;
        if short {
            // The write ran out of room: the kernel arms the wake-up.
            if let Some(s) = self.sock_mut(h) {
                s.nospace = true;
            }
        }
        self.pump_all();
        Ok(n)
    }

    /// `recvmsg(MSG_PEEK)` of at most `len` bytes after skipping `skip` (from
    /// the peek offset when SO_PEEK_OFF is set, which then advances). Returns
    /// the bytes; empty at end of stream.
    pub fn peek(&mut self, id: SockId, skip: u32, len: usize) -> Result<Vec<u8>, Errno> {
        let h = self.core_handle(id)?;
        let (ci, side) = self.conn_side(h).map_err(|_| Errno::EAGAIN)?;
        if let Some(e) = self.take_err(ci, side) {
            return Err(e);
        }
        let peek_off = self.sock(h).and_then(|s| s.peek_off);
        let c = self.conn(ci)?;
        if c.reset {
            return err(Errno::ECONNRESET);
        }
        let p = &c.pipes[1 - side];
        let start = (peek_off.unwrap_or(0) as usize).saturating_add(skip as usize);
        let avail = p.rcv.len().saturating_sub(start);
        if avail == 0 {
            return if p.eof() {
                Ok(Vec::new())
            } else {
                err(Errno::EAGAIN)
            };
        }
        let n = avail.min(len);
        let out: Vec<u8> = p.rcv.iter().skip(start).take(n).copied().collect();
        if let Some(s) = self.sock_mut(h) {
            if let Some(o) = s.peek_off.as_mut() {
                *o = o.saturating_add(skip).saturating_add(n as u32);
            }
        }
        Ok(out)
    }

    /// `recv(MSG_TRUNC)`: discards up to `len` bytes; returns how many.
    pub fn consume(&mut self, id: SockId, len: usize) -> Result<usize, Errno> {
        let h = self.core_handle(id)?;
        self.consume_handle(h, len)
    }

    pub(super) fn consume_handle(&mut self, h: usize, len: usize) -> Result<usize, Errno> {
        let (ci, side) = self.conn_side(h)?;
        let c = self.conn_mut(ci)?;
        let p = &mut c.pipes[1 - side];
        let n = len.min(p.rcv.len());
        p.rcv.drain(..n);
        p.consumed += n as u64;
        if let Some(s) = self.sock_mut(h) {
            if let Some(o) = s.peek_off.as_mut() {
                *o = o.saturating_sub(n as u32);
            }
        }
        self.mutations += 1;
        self.pump_all();
        Ok(n)
    }

    /// TCP_INFO, SO_SNDBUF and SIOCOUTQ of a stream.
    pub fn tcp_info(&self, id: SockId) -> Result<TcpInfo, Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock(h).ok_or(Errno::EBADF)?;
        let (ci, side) = s.conn.ok_or(Errno::EBADF)?;
        let c = self.conn(ci)?;
        let p = &c.pipes[side];
        let min_rtt_us = if p.rtt > 0 {
            (p.rtt / 1000) as u32
        } else {
            self.cfg.min_rtt_us
        };
        Ok(TcpInfo {
            bytes_acked: p.delivered,
            snd_wnd: p.rcv_cap.saturating_sub(p.rcv.len()) as u32,
            snd_wscale: 7,
            snd_mss: 65480,
            min_rtt_us,
            sndbuf: p.snd_cap as u32,
            queued: p.queued() as u32,
        })
    }

    /// `SO_MEMINFO` of a stream: the send buffer and what its queue costs.
    pub fn send_space(&self, id: SockId) -> Result<SendSpace, Errno> {
        let h = self.core_handle(id)?;
        let (ci, side) = self.conn_side(h)?;
        let c = self.conn(ci)?;
        let p = &c.pipes[side];
        Ok(SendSpace {
            sndbuf: p.snd_cap as u32,
            queued: p.queued() as u32,
        })
    }

    /// `shutdown(SHUT_WR)`.
    pub fn shutdown_write(&mut self, id: SockId) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.shutdown_handle(h)
    }

    pub(super) fn shutdown_handle(&mut self, h: usize) -> Result<(), Errno> {
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.shut_wr = true;
        let conn = s.conn;
        if let Some((ci, side)) = conn {
            if let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) {
                c.pipes[side].fin = true;
                if c.pipes[side].snd.is_empty() {
                    // The FIN reaches the other side now.
                    c.gen[1 - side] += 1;
                }
            }
        }
        self.mutations += 1;
        Ok(())
    }

    /// `close()` by the core.
    pub fn close(&mut self, id: SockId) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.by_core.remove(&id);
        self.close_handle(h, false);
        Ok(())
    }

    pub(super) fn close_handle(&mut self, h: usize, force_rst: bool) {
        self.mutations += 1;
        let Some(s) = self.socks.get_mut(h).and_then(Option::take) else {
            return;
        };
        // Pending connections of a listener die with it.
        for p in s.backlog {
            self.close_handle(p, true);
        }
        let Some((ci, side)) = s.conn else { return };
        let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) else {
            return;
        };
        c.ends[side] = None;
        c.gen[0] += 1;
        c.gen[1] += 1;
        let unread = !c.pipes[1 - side].rcv.is_empty() || !c.pipes[1 - side].snd.is_empty();
        let linger = s.linger_zero && !unread && !force_rst;
        if !c.reset && (unread || force_rst || s.linger_zero) {
            c.reset = true;
            c.err[1 - side] = Some(Errno::ECONNRESET);
            c.pipes[0].snd.clear();
            c.pipes[1].snd.clear();
            let id = c.id;
            self.notes.push(if linger {
                format!("conn#{id}: reset by close with SO_LINGER 0")
            } else {
                format!("conn#{id}: reset by close with unread data")
            });
        } else if !c.reset {
            c.pipes[side].fin = true;
        }
        if c.ends.iter().all(Option::is_none) {
            let id = c.id;
            self.closed_views.push(id);
            // Keep the pipes for the final checks: the connection stays in the
            // table without ends.
        }
        self.pump_all();
    }

    pub(super) fn pump_all(&mut self) {
        let now = self.now;
        for c in self.conns.iter_mut().flatten() {
            if c.reset {
                continue;
            }
            for k in 0..2 {
                let eof = c.pipes[k].eof();
                let (moved, freed) = c.pipes[k].pump(now);
                if moved || (c.pipes[k].eof() && !eof) {
                    // Data or the FIN reached the receiver: it wakes up.
                    c.gen[1 - k] += 1;
                }
                if moved || freed {
                    self.mutations += 1;
                }
            }
        }
    }
}

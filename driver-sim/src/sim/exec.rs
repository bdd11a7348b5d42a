//! Carrying out the core's actions on the simulated kernel.

use super::*;

impl Sim {
    /// Carries out action `a` (`batch`: the buffer its spans point into),
    /// then checks that the socket it names is one the core opened.
    pub(super) fn exec(&mut self, a: Action, batch: &[u8]) {
        self.carry_out(a, batch);
        self.kernel_notes();
        self.check_sock_ids(a);
    }

    // Long by design: one arm per core action, carried out on the simulated kernel as the
    // epoll driver would; the arms mirror the action list.
    fn carry_out(&mut self, a: Action, batch: &[u8]) {
        if let Some((sock, p)) = a.peek_request() {
            return self.peek(sock, p);
        }
        if let Some((sock, r)) = a.recv_request() {
            return self.recv(sock, r);
        }
        let now_ns = self.now.as_nanos();
        match a {
            Action::Open {
                sock,
                kind,
                family,
                netns,
            } => {
                let r = self.kernel.open(sock, kind, family, netns);
                self.note(
                    "host",
                    format!("socket({kind:?}, {family:?}, {netns:?}) as {sock:?} = {r:?}"),
                );
                if let Err(e) = r {
                    self.event(sock, SockEvent::OpenFailed(e));
                }
                if self.kernel.core_sockets() > self.core.config().limits.flows.saturating_mul(2) {
                    self.violation("resources: more core sockets than twice the flow table".into());
                }
            }
            Action::Bind { sock, addr, opts } => {
                let r = self.kernel.bind(sock, addr, opts.reuse_addr);
                self.note("host", format!("bind({sock:?}, {addr}) = {r:?}"));
                if let Err(e) = r {
                    let _ = self.kernel.close(sock);
                    self.event(sock, SockEvent::OpenFailed(e));
                }
            }
            Action::Connect { sock, addr } => {
                let r = self.kernel.connect(sock, addr, now_ns);
                self.note("host", format!("connect({sock:?}, {addr}) = {r:?}"));
                self.checker.on_connect(sock, addr, &self.kernel);
                if let Err(e) = r {
                    self.event(sock, SockEvent::Connected(Err(e)));
                }
            }
            Action::Listen { sock, backlog } => {
                let r = self.kernel.listen(sock, backlog);
                self.note("host", format!("listen({sock:?}, {backlog}) = {r:?}"));
                if let Err(e) = r {
                    let _ = self.kernel.close(sock);
                    self.event(sock, SockEvent::OpenFailed(e));
                }
            }
            Action::Accept { listener, sock } => {
                let r = self.kernel.accept(listener, sock);
                self.note("host", format!("accept({listener:?}) as {sock:?} = {r:?}"));
                if r.is_ok() {
                    self.checker.on_accepted(sock);
                }
                self.event(sock, SockEvent::Accepted(r));
            }
            Action::SetInterest { sock, interest } => {
                let r = self.kernel.set_interest(sock, interest);
                let mut m = String::new();
                for (on, c) in [
                    (interest.readable, "IN"),
                    (interest.writable, "OUT"),
                    (interest.read_hangup, "RDHUP"),
                    (interest.edge, "ET"),
                ] {
                    if on {
                        if !m.is_empty() {
                            m.push('|');
                        }
                        m.push_str(c);
                    }
                }
                self.note("host", format!("epoll({sock:?}, {m}) = {r:?}"));
            }
            Action::SetOption { sock, opt } => {
                let r = match opt {
                    SockOpt::PeekOffset(v) => self.kernel.set_peek_off(sock, v),
                    SockOpt::ResetOnClose => self.kernel.set_linger_zero(sock),
                    _ => Ok(()),
                };
                self.note("host", format!("setsockopt({sock:?}, {opt:?}) = {r:?}"));
            }
            Action::Send { sock, spans } => {
                let (parts, bad) = span_slices(self.core.spans(spans), batch);
                let data = parts.concat();
                if bad {
                    self.violation("send: a span points outside the batch buffer".into());
                }
                let mut r = self.kernel.send(sock, &data);
                if self.planted == Some(PlantedBug::AckOneMore) {
                    if let Ok(n) = r {
                        if n < data.len() {
                            r = Ok(n + 1);
                        }
                    }
                }
                self.note("host", format!("send({sock:?}, {}) = {r:?}", data.len()));
                for v in self.checker.on_sent(sock, &self.kernel) {
                    self.violation(v);
                }
                let space = self.kernel.send_space(sock).unwrap_or_default();
                self.event(sock, SockEvent::StreamSent { sent: r, space });
            }
            Action::SendDatagrams { sock, spans, to } => {
                let (dgrams, bad) = span_slices(self.core.spans(spans), batch);
                let r = self.kernel.send_datagrams(sock, &dgrams, to);
                let sizes: Vec<String> = dgrams.iter().map(|d| d.len().to_string()).collect();
                let dest = to.map_or(String::new(), |t| format!(" to {t}"));
                self.note(
                    "host",
                    format!("sendmmsg({sock:?}, [{}]{dest}) = {r:?}", sizes.join(", ")),
                );
                if bad {
                    self.violation("send: a span points outside the batch buffer".into());
                }
                self.core
                    .handle_sock_event(self.now, sock, SockEvent::Sent(r));
            }
            Action::Consume { sock, len } => {
                let r = self.kernel.consume(sock, len as usize);
                self.note("host", format!("recv({sock:?}, {len}, MSG_TRUNC) = {r:?}"));
                if r != Ok(len as usize) {
                    self.violation(format!(
                        "consume: core discarded {len} bytes but the queue held {r:?}"
                    ));
                }
            }
            Action::QueryTcpInfo { sock } => match self.kernel.tcp_info(sock) {
                Ok(i) => self.event(sock, SockEvent::TcpInfo(i)),
                Err(e) => self.note("host", format!("tcp_info({sock:?}) = {e:?}")),
            },
            Action::QuerySendSpace { sock } => match self.kernel.send_space(sock) {
                Ok(sp) => self.event(sock, SockEvent::SendSpace(sp)),
                Err(e) => self.note("host", format!("meminfo({sock:?}) = {e:?}")),
            },
            Action::ShutdownWrite { sock } => {
                let r = self.kernel.shutdown_write(sock);
                self.note("host", format!("shutdown({sock:?}, SHUT_WR) = {r:?}"));
            }
            Action::Splice { sock, peer } => {
                self.note("host", format!("splice({sock:?}, {peer:?})"));
                if let Some((s, ev)) = self.splicer.join(&mut self.kernel, sock, peer) {
                    self.note("host", format!("{s:?} {ev:?}"));
                    self.core.handle_sock_event(self.now, s, ev);
                }
            }
            Action::Close { sock } => {
                self.splicer.forget(sock);
                let r = self.kernel.close(sock);
                self.note("host", format!("close({sock:?}) = {r:?}"));
            }
            other => self.violation(format!("the simulator cannot carry out {other:?}")),
        }
    }

    /// Every action but Open and Accept names a socket the core opened and
    /// has not closed; Open and Accept add theirs, Close removes it.
    fn check_sock_ids(&mut self, a: Action) {
        let sock = match a {
            Action::Bind { sock, .. }
            | Action::Connect { sock, .. }
            | Action::Listen { sock, .. }
            | Action::SetInterest { sock, .. }
            | Action::SetOption { sock, .. }
            | Action::Send { sock, .. }
            | Action::SendDatagrams { sock, .. }
            | Action::Peek { sock, .. }
            | Action::Recv { sock, .. }
            | Action::Consume { sock, .. }
            | Action::QueryTcpInfo { sock }
            | Action::QuerySendSpace { sock }
            | Action::ShutdownWrite { sock }
            | Action::Close { sock } => Some(sock),
            _ => None,
        };
        if let Some(sock) = sock {
            // The core queues a new socket's set-up behind its Open; when the
            // Open fails, the rest of it names a socket that never existed
            // (the driver ignores it).
            if !self.known_socks.contains(&sock) && !self.failed_socks.contains(&sock) {
                self.violation(format!("socket ids: {a:?} names a socket that is not open"));
            }
        }
        match a {
            Action::Open { sock, .. } | Action::Accept { sock, .. } => {
                if self.kernel.core_ids().contains(&sock) {
                    self.known_socks.insert(sock);
                    self.failed_socks.remove(&sock);
                } else {
                    self.failed_socks.insert(sock);
                }
            }
            _ => {}
        }
        // Closed sockets leave the set; sockets the driver dropped because a
        // Bind or Listen failed count as failed opens.
        let open = self.kernel.core_ids();
        let closed = if let Action::Close { sock } = a {
            Some(sock)
        } else {
            None
        };
        let gone: Vec<_> = self
            .known_socks
            .iter()
            .filter(|s| !open.contains(s))
            .copied()
            .collect();
        for s in gone {
            self.known_socks.remove(&s);
            if Some(s) != closed {
                self.failed_socks.insert(s);
            }
        }
    }

    fn peek(&mut self, sock: passt_core::SockId, p: PeekRequest) {
        let kernel = &mut self.kernel;
        let mut line = None;
        self.ring.now = self.now;
        self.core
            .peek_into(self.now, &mut self.ring, sock, p, |skip, iov| {
                let want: usize = iov.iter().map(|s| s.len()).sum();
                let r = kernel.peek(sock, skip, want);
                line = Some(format!(
                    "recvmsg({sock:?}, skip {skip}, {want}, MSG_PEEK) = {:?}",
                    r.as_ref().map(Vec::len)
                ));
                let data = r?;
                let mut rest = &data[..];
                for s in iov.iter_mut() {
                    let n = s.len().min(rest.len());
                    s[..n].copy_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                Ok(data.len())
            });
        match line {
            Some(l) => self.note("host", l),
            None => self.note("link", format!("no room for {sock:?}'s data")),
        }
        self.flush();
    }

    fn recv(&mut self, sock: passt_core::SockId, r: passt_core::RecvRequest) {
        let max = r.max;
        let kernel = &mut self.kernel;
        let mut line = None;
        let mut failed = false;
        let mut got = Vec::new();
        self.ring.now = self.now;
        self.core.recv_into(
            self.now,
            &mut self.ring,
            sock,
            r,
            &mut got,
            |bufs, room, got| {
                let r = kernel.recv_datagrams(sock, bufs.len().min(usize::from(max)));
                let d = match r {
                    Ok(d) => d,
                    Err(e) => {
                        line = Some(format!("recvmmsg({sock:?}, {max}) = {e:?}"));
                        failed = true;
                        return Err(e);
                    }
                };
                let sizes: Vec<String> = d
                    .iter()
                    .map(|(p, d)| format!("{} from {p}", d.len()))
                    .collect();
                line = Some(format!(
                    "recvmmsg({sock:?}, {max}) = [{}]",
                    sizes.join(", ")
                ));
                for (b, (peer, data)) in bufs.iter_mut().zip(&d) {
                    if let Some(dst) = b.get_mut(room..) {
                        let n = dst.len().min(data.len());
                        dst[..n].copy_from_slice(&data[..n]);
                    }
                    got.push((data.len(), *peer));
                }
                Ok(())
            },
        );
        if let Some(l) = line {
            self.note("host", l);
        }
        if !failed {
            self.flush();
        }
    }
}

/// The pieces of `batch` that `spans` point to, in order, and whether any
/// span points outside it (left out).
fn span_slices<'b>(spans: &[passt_core::Span], batch: &'b [u8]) -> (Vec<&'b [u8]>, bool) {
    let mut parts = Vec::with_capacity(spans.len());
    let mut bad = false;
    for sp in spans {
        let start = sp.offset as usize;
        match batch.get(start..start.saturating_add(sp.len as usize)) {
            Some(b) => parts.push(b),
            None => bad = true,
        }
    }
    (parts, bad)
}

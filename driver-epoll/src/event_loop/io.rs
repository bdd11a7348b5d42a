//! Carrying out the core's actions: the drain step after every input,
//! peeks into transmit slots and datagram batches.

use super::*;

impl Io {
    /// Hands the core what a splicer reported on one of its sockets, if
    /// anything, and drains.
    pub(super) fn spliced(&mut self, r: Option<(SockId, SockEvent)>) {
        if let Some((s, ev)) = r {
            let t = now();
            log::trace!("{s:?}: {ev:?}");
            self.core.handle_sock_event(t, s, ev);
            self.drain(t, &[]);
        }
    }

    /// Drains the core after an input: actions (results fed back at once),
    /// queued frames into the guest link's ring, then the flush. `rx` is the
    /// buffer of the batch just handed over (send spans point into it);
    /// empty otherwise.
    pub(super) fn drain(&mut self, now: Instant, rx: &[u8]) {
        // Each round either carries out actions or moves frames; the core's
        // queues are bounded, so this ends; the bound only guards against a
        // core that keeps producing work on its own feedback.
        for _ in 0..1024 {
            let mut busy = false;
            while let Some(a) = self.core.poll_action() {
                busy = true;
                self.carry_out(now, a, rx);
            }
            let mut ring = LinkTx {
                arena: &mut self.arena,
                link: &mut self.link,
                pcap: &mut self.pcap,
            };
            busy |= self.core.transmit_queued(now, &mut ring);
            if ring.pending() > 0 {
                busy = true;
                if self.core.flush_ring(now, &mut ring) == 0 {
                    // The link takes nothing now (no qemu client, or a full
                    // socket): the core sends again once it has room.
                    break;
                }
            }
            if !busy {
                break;
            }
        }
        if self.core.tap_blocked() || self.link.tail_pending() {
            // Frames were refused, flows wait for room, or the rest of a
            // frame does: be told when the link has some.
            self.link.want_writable(&self.epoll, true);
        }
    }

    // Long by design: one arm per action the core emits; each arm is a syscall or a
    // call into the socket table.
    pub(super) fn carry_out(&mut self, now: Instant, action: Action, rx: &[u8]) {
        if log::log_enabled!(log::Level::Trace) {
            log::trace!("action {action:?}");
        }
        if let Some((sock, p)) = action.peek_request() {
            return self.peek(now, sock, p);
        }
        if let Some((sock, r)) = action.recv_request() {
            return self.recv(now, sock, r);
        }
        if let Action::Open {
            sock,
            kind: passt_core::SockKind::TcpStream,
            family,
            netns: passt_core::Netns::Guest,
        } = action
        {
            // The far side of a spliced connection from the host: from the
            // sockets the splicer opened ahead in the guest's namespace.
            if let Some(ns) = self.guest_ns.as_ref() {
                match self.splicer.ns_socket(ns, family) {
                    Ok(fd) => self.socks.insert_no_delay(sock, fd),
                    Err(e) => self
                        .core
                        .handle_sock_event(now, sock, SockEvent::OpenFailed(e)),
                }
                return;
            }
        }
        if let Action::Splice { sock, peer } = action {
            let mut cx = SockCx {
                epoll: &self.epoll,
                socks: &mut self.socks,
            };
            if let Some((s, ev)) = self.splicer.join(&mut cx, sock, peer) {
                self.core.handle_sock_event(now, s, ev);
            }
            // The first bytes are on their way: sockets for the next
            // connections, if their pool runs low.
            if let Some(ns) = self.guest_ns.as_ref() {
                self.splicer.refill_ns(ns);
            }
            return;
        }
        let dgram_event = match action {
            Action::PeekPeer { sock } => Some((sock, self.dsplicer.peek_peer(&self.socks, sock))),
            Action::ForwardDatagrams { from, to, max } => {
                Some((from, self.dsplicer.forward(&self.socks, from, to, max)))
            }
            Action::QuerySpliced { sock } => Some((sock, self.dsplicer.query(sock))),
            Action::SpliceDatagrams { sock, peer } => Some(
                match self.dsplicer.join(
                    &mut SockCx {
                        epoll: &self.epoll,
                        socks: &mut self.socks,
                    },
                    sock,
                    peer,
                ) {
                    Some((s, ev)) => (s, Some(ev)),
                    None => (sock, None),
                },
            ),
            _ => None,
        };
        if let Some((s, ev)) = dgram_event {
            if let Some(ev) = ev {
                if log::log_enabled!(log::Level::Trace) {
                    log::trace!("{s:?}: {ev:?}");
                }
                self.core.handle_sock_event(now, s, ev);
            }
            return;
        }
        if let Action::Close { sock } = action {
            self.splicer.forget(sock);
            self.dsplicer.forget(sock);
        }
        let spans: Vec<IoSlice<'_>> = match action {
            Action::Send { spans, .. } | Action::SendDatagrams { spans, .. } => self
                .core
                .spans(spans)
                .iter()
                .filter_map(|s| {
                    let start = s.offset as usize;
                    rx.get(start..start.checked_add(s.len as usize)?)
                })
                .map(IoSlice::new)
                .collect(),
            _ => Vec::new(),
        };
        let out = self
            .socks
            .execute(&self.epoll, self.guest_ns.as_ref(), action, &spans);
        drop(spans);
        if let Outcome::Event(sock, ev) = out {
            if log::log_enabled!(log::Level::Trace) {
                log::trace!("{sock:?}: {ev:?}");
            }
            self.core.handle_sock_event(now, sock, ev);
        }
    }

    /// The core, the guest link's ring, the socket table and the receive
    /// buffers (peek discard, datagram lengths and peers), borrowed apart for
    /// a peek or a receive into the link's slots.
    #[allow(clippy::type_complexity)]
    fn ring_parts(
        &mut self,
    ) -> (
        &mut Core,
        LinkTx<'_>,
        &SockTable,
        &mut Vec<u8>,
        &mut Vec<(usize, std::net::SocketAddr)>,
    ) {
        let Io {
            core,
            arena,
            link,
            pcap,
            socks,
            discard,
            dgram_got,
            ..
        } = self;
        (
            core,
            LinkTx { arena, link, pcap },
            socks,
            discard,
            dgram_got,
        )
    }

    /// Carries out `Action::Peek` through the guest link's ring (see
    /// `link/txring.rs`): the socket's data lands in the payload areas of the
    /// link's slots, the core writes the frames around it.
    pub(super) fn peek(&mut self, now: Instant, sock: SockId, p: passt_core::PeekRequest) {
        let (core, mut ring, socks, discard, _) = self.ring_parts();
        core.peek_into(now, &mut ring, sock, p, |skip, iov| match socks.get(sock) {
            None => Err(passt_core::Errno::EBADF),
            Some(e) => crate::sock::peek(e.fd.as_fd(), skip, discard, iov),
        });
    }

    /// Carries out `Action::Recv`: one `recvmmsg` into the payload areas of
    /// the link's slots; the core writes the headers in front.
    pub(super) fn recv(&mut self, now: Instant, sock: SockId, r: passt_core::RecvRequest) {
        let (core, mut ring, socks, _, dgram_got) = self.ring_parts();
        core.recv_into(
            now,
            &mut ring,
            sock,
            r,
            dgram_got,
            |bufs, room, got| match socks.get(sock) {
                None => Err(passt_core::Errno::EBADF),
                Some(e) => {
                    crate::sock::dgram::recv_datagrams(e.fd.as_fd(), bufs, room, got).map(|_| ())
                }
            },
        );
    }
}

//! Connections from host peers: accepting on the listeners of forwarded
//! ports, and the first steps of an accepted connection.

use super::sock::flow_of;
use super::*;

impl TcpState {
    /// The flow, listener and target port of `sock` if it is a connection
    /// being accepted: the engine offers it to splicing before
    /// [`Self::sock_event`] sees the `Accepted` result.
    pub(crate) fn accepting(&self, flows: &FlowTable, sock: SockId) -> Option<(FlowId, u32, u16)> {
        let id = flow_of(flows, sock)?;
        match &flows.get(id)?.data {
            FlowData::Tcp(c) if c.phase == Phase::Accepting => {
                Some((id, c.listener, c.target_port))
            }
            _ => None,
        }
    }

    /// Splicing took connection `id` (see [`Self::accepting`]): the timer
    /// armed for its accept is not TCP's to run any more.
    pub(crate) fn handed_over(&mut self, flows: &FlowTable, id: FlowId) {
        self.timers.arm(flows, id, None);
    }

    /// A connection accepted on a listener: map its addresses, then learn
    /// the socket's buffers before the SYN to the guest.
    pub(super) fn accepted(&mut self, cx: &mut Ctx<'_>, id: FlowId, peer: SocketAddr) {
        let now = cx.now;
        let Some(c) = cx.tc(id) else { return };
        let (sock, target, listener) = (c.sock, c.target_port, c.listener);
        let guest_side = cx
            .listeners
            .guest_side(cx.cfg, cx.guest, Proto::Tcp, listener, peer.ip());
        let Some((src, guest_addr)) = guest_side else {
            cx.counters.drop(DropReason::TcpBadEndpoint);
            return self.close(cx, id, false);
        };
        let key = FlowKey {
            proto: PROTO_TCP,
            src: guest_addr,
            dst: src,
            sport: target,
            dport: peer.port(),
        };
        if peer.port() == 0 || target == 0 || !cx.flows.insert_key(id, key) {
            cx.counters.drop(DropReason::TcpBadEndpoint);
            return self.close(cx, id, false);
        }
        let isn = isn(cx.cfg, &key, now);
        let ts_off = ts_offset(cx.cfg, &key);
        let host = peer.ip().to_canonical();
        let known_low_rtt = self.low_rtt.contains(&Some(host));
        let Some(c) = cx.tc(id) else { return };
        c.phase = Phase::AcceptedInfo;
        c.isn = isn;
        c.seq_to_tap = isn;
        c.seq_max_to_tap = isn;
        c.seq_ack_from_tap = isn;
        c.ws_to_tap = MAX_WS;
        // Timestamps are offered on our SYN; the guest's SYN-ACK decides.
        c.ts_ok = true;
        c.ts_off = ts_off;
        c.t_phase = now;
        c.t_active = now;
        c.local = host.is_loopback() || known_low_rtt;
        c.host_addr = Some(host);
        self.stats.opened += 1;
        log::debug!(
            "tcp flow {}: host {peer} -> guest {}:{} as {}:{}",
            id.0,
            key.src,
            key.sport,
            key.dst,
            key.dport
        );
        stream_options(cx, sock);
        cx.act(Action::QueryTcpInfo { sock });
        self.interest(cx, id);
    }

    pub(super) fn listener_event(&mut self, cx: &mut Ctx<'_>, idx: u32, ev: SockEvent) -> bool {
        let now = cx.now;
        let sock = SockId(LISTENER_BIT | idx);
        if idx == REJECT_IDX {
            match ev {
                SockEvent::Accepted(Ok(_)) => cx.act(Action::Close { sock }),
                SockEvent::Accepted(Err(e)) if fwd::accept_exhausted(e) => {
                    cx.listeners.pause_accept(cx.actions, None, now);
                }
                _ => {}
            }
            return true;
        }
        let Some(target_port) = cx.listeners.get(Proto::Tcp, idx).map(|l| l.fwd.target_port) else {
            return false;
        };
        if ev != SockEvent::Readable || cx.listeners.accept_paused(idx) {
            return true;
        }
        let conn = TcpConn {
            phase: Phase::Accepting,
            listener: idx,
            target_port,
            t_phase: now,
            t_active: now,
            ..TcpConn::default()
        };
        let id = match cx.flows.alloc(FlowData::Tcp(conn)) {
            Ok(id) => id,
            Err(reason) => {
                cx.counters.drop(reason);
                cx.act(Action::Accept {
                    listener: sock,
                    sock: SockId(LISTENER_BIT | REJECT_IDX),
                });
                return true;
            }
        };
        let gen = cx.flows.get(id).map_or(0, |f| f.gen);
        let fs = flow::sock_id(id, gen, 0);
        if let Some(c) = cx.tc(id) {
            c.sock = fs;
        }
        cx.act(Action::Accept {
            listener: sock,
            sock: fs,
        });
        self.note_timer(cx, id);
        true
    }
}

//! TCP translation, driven the way a driver drives it: guest frames built
//! with etherparse go in, a small fake kernel answers the actions, and every
//! frame that comes out is re-parsed with etherparse (checksums verified).

use super::*;
use crate::action::Span;
use crate::fwd::{Forward, Proto};
use crate::testutil::{
    capture_config, check_ip, check_l4_checksum, g6, p6, Clocked, FakeKernel, Harness, GUEST4,
    GUEST_MAC, PEER4,
};
use crate::{Config, Core, Csum, FrameMeta, PeekRequest};
use core::net::{Ipv4Addr, Ipv6Addr};
use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use std::collections::HashMap;

mod close;
mod data;
mod forwards;
mod handshake;
mod limits;
mod random;
mod timestamps;
mod window;

// --- the fake kernel ------------------------------------------------------

#[derive(Debug, Default)]
struct FakeSock {
    kind: Option<SockKind>,
    connect: Option<SocketAddr>,
    /// Data from the host peer not yet consumed.
    rx: Vec<u8>,
    eof: bool,
    /// SO_PEEK_OFF: off (-1) until set, as in Linux.
    peek_off: Option<usize>,
    /// Everything written by the core.
    written: Vec<u8>,
    /// Most bytes the next sends may take in total (None: sndbuf - outq).
    send_room: Option<usize>,
    sndbuf: u32,
    outq: u32,
    min_rtt_us: u32,
    shut_wr: bool,
    mss: Option<u16>,
    interest: Option<Interest>,
    peek_err: Option<Errno>,
    /// SO_LINGER with a zero timeout: its close resets the peer.
    linger_zero: bool,
    /// TCP_NODELAY.
    nodelay: bool,
    /// Report a write taken whole without the buffer's state, as the
    /// driver does for small writes.
    omit_space: bool,
}

/// One guest-bound TCP segment, re-parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Out {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    syn: bool,
    ackf: bool,
    fin: bool,
    rst: bool,
    psh: bool,
    win: u16,
    mss: Option<u16>,
    ws: Option<u8>,
    opts: Vec<TcpOptionElement>,
    payload: Vec<u8>,
}

/// The TCP side of the fake kernel, beside its sockets.
struct TcpKernel {
    /// Frames of the last handle_peeked calls not yet reported with
    /// handle_tap_sent (when `auto_sent`).
    slots: usize,
    /// Sockets after `Close`.
    dead: HashMap<SockId, FakeSock>,
    /// SO_SNDBUF of new sockets.
    sndbuf: u32,
    /// Offload metadata of the peeked frames in `frames`, in order.
    metas: Vec<FrameMeta>,
}

type H = Harness<TcpKernel>;

impl FakeKernel for TcpKernel {
    type Sock = FakeSock;
    type Out = Out;

    fn parse(f: &[u8]) -> Option<Out> {
        let p = SlicedPacket::from_ethernet(f).expect("frame re-parses");
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            return None;
        };
        let (src, dst) = check_ip(f, &p);
        check_l4_checksum(src, dst, 6, t.slice(), "TCP");
        let opts: Vec<TcpOptionElement> = t.options_iterator().map(|o| o.unwrap()).collect();
        let mss = opts.iter().find_map(|o| match o {
            TcpOptionElement::MaximumSegmentSize(m) => Some(*m),
            _ => None,
        });
        let ws = opts.iter().find_map(|o| match o {
            TcpOptionElement::WindowScale(w) => Some(*w),
            _ => None,
        });
        Some(Out {
            src,
            dst,
            sport: t.source_port(),
            dport: t.destination_port(),
            seq: t.sequence_number(),
            ack: t.acknowledgment_number(),
            syn: t.syn(),
            ackf: t.ack(),
            fin: t.fin(),
            rst: t.rst(),
            psh: t.psh(),
            win: t.window_size(),
            mss,
            ws,
            opts,
            payload: t.payload().to_vec(),
        })
    }

    // Long by design: one arm per action the core emits, each a few lines of the
    // harness's kernel model; split, the arms would pass the whole harness around.
    fn carry_out(h: &mut H, a: Action, buf: &[u8]) {
        if let Some((sock, p)) = a.peek_request() {
            return peek(h, sock, p);
        }
        match a {
            Action::Open { sock, kind, .. } => {
                h.socks.insert(
                    sock,
                    FakeSock {
                        kind: Some(kind),
                        sndbuf: h.k.sndbuf,
                        ..FakeSock::default()
                    },
                );
            }
            Action::Connect { sock, addr } => {
                h.socks.get_mut(&sock).unwrap().connect = Some(addr);
            }
            Action::SetInterest { sock, interest } => {
                if let Some(s) = h.socks.get_mut(&sock) {
                    s.interest = Some(interest);
                }
            }
            Action::SetOption { sock, opt } => {
                let s = h.socks.get_mut(&sock).expect("option on open socket");
                match opt {
                    SockOpt::PeekOffset(o) => s.peek_off = Some(o as usize),
                    SockOpt::TcpMaxSeg(m) => s.mss = Some(m),
                    SockOpt::ResetOnClose => s.linger_zero = true,
                    SockOpt::NoDelay => s.nodelay = true,
                    _ => {}
                }
            }
            Action::Send { sock, spans } => {
                let data: Vec<u8> = h
                    .core
                    .spans(spans)
                    .iter()
                    .flat_map(|s: &Span| {
                        buf[s.offset as usize..(s.offset + s.len) as usize].to_vec()
                    })
                    .collect();
                let s = h.socks.get_mut(&sock).unwrap();
                assert!(!s.shut_wr, "send after shutdown");
                let free = s.sndbuf.saturating_sub(s.outq) as usize;
                let room = s.send_room.unwrap_or(free).min(free);
                let n = data.len().min(room);
                s.written.extend_from_slice(&data[..n]);
                s.outq += n as u32;
                if let Some(r) = &mut s.send_room {
                    *r -= n;
                }
                let r = if n == 0 && !data.is_empty() {
                    Err(Errno::EAGAIN)
                } else {
                    Ok(n)
                };
                let space = if s.omit_space && n == data.len() {
                    SendSpace::default()
                } else {
                    SendSpace {
                        sndbuf: s.sndbuf,
                        queued: s.outq,
                    }
                };
                h.core
                    .handle_sock_event(h.now, sock, SockEvent::StreamSent { sent: r, space });
            }
            Action::QuerySendSpace { sock } => {
                let s = &h.socks[&sock];
                let space = SendSpace {
                    sndbuf: s.sndbuf,
                    queued: s.outq,
                };
                h.core
                    .handle_sock_event(h.now, sock, SockEvent::SendSpace(space));
            }
            Action::QueryTcpInfo { sock } => {
                let s = &h.socks[&sock];
                let info = TcpInfo {
                    sndbuf: s.sndbuf,
                    queued: s.outq,
                    snd_mss: 1460,
                    min_rtt_us: s.min_rtt_us,
                    snd_wnd: 65535,
                    ..TcpInfo::default()
                };
                h.core
                    .handle_sock_event(h.now, sock, SockEvent::TcpInfo(info));
            }
            Action::Consume { sock, len } => {
                let s = h.socks.get_mut(&sock).unwrap();
                assert!(len as usize <= s.rx.len(), "consume beyond data");
                s.rx.drain(..len as usize);
                if let Some(o) = &mut s.peek_off {
                    *o = o.saturating_sub(len as usize);
                }
            }
            Action::ShutdownWrite { sock } => {
                h.socks.get_mut(&sock).unwrap().shut_wr = true;
            }
            Action::Close { sock } => {
                if let Some(s) = h.socks.remove(&sock) {
                    h.k.dead.insert(sock, s);
                }
                h.closed.push(sock);
            }
            Action::Accept { .. } | Action::Bind { .. } | Action::Listen { .. } => {}
            _ => {}
        }
    }

    fn poll_timeout(core: &Core) -> Option<Instant> {
        core.tcp.poll_timeout()
    }
}

/// Carries out an `Action::Peek`: the data past the peek offset (or `skip`)
/// into transmit slots, handed to the core; the frames it makes are
/// completed as the link would and kept.
fn peek(h: &mut H, sock: SockId, p: PeekRequest) {
    let peek_offset = h.core.config().peek_offset;
    h.poll_frames();
    let s = h.socks.get_mut(&sock).unwrap();
    let start = if peek_offset {
        assert_eq!(p.skip, 0);
        s.peek_off.expect("SO_PEEK_OFF set before the first peek")
    } else {
        assert!(s.peek_off.is_none());
        p.skip as usize
    };
    let nslots = 64;
    let mut bufs: Vec<Vec<u8>> = (0..nslots)
        .map(|_| vec![0u8; p.room as usize + p.mss as usize])
        .collect();
    let avail = s.rx.len().saturating_sub(start);
    let n = avail.min(p.len as usize).min(nslots * p.mss as usize);
    let r = if let Some(e) = s.peek_err {
        Err(e)
    } else if n == 0 && s.eof {
        Ok(0)
    } else if n == 0 {
        Err(Errno::EAGAIN)
    } else {
        let data = &s.rx[start..start + n];
        for (i, chunk) in data.chunks(p.mss as usize).enumerate() {
            bufs[i][p.room as usize..p.room as usize + chunk.len()].copy_from_slice(chunk);
        }
        if let Some(o) = &mut s.peek_off {
            *o += n;
        }
        Ok(n)
    };
    let mut slots: Vec<TxSlot<'_>> = bufs
        .iter_mut()
        .map(|b| TxSlot::new(b.as_mut_slice()))
        .collect();
    let k = h.core.handle_peeked(h.now, sock, r, &mut slots);
    let mut seen = 0;
    for sl in &mut slots {
        if sl.frame_len > 0 {
            seen += 1;
            if let Csum::Partial { start, offset } = sl.meta.csum {
                // Completed as the link would: the sum from
                // `start` on, over the pseudo-header's.
                let (st, at) = (usize::from(start), usize::from(start + offset));
                let sum = crate::wire::checksum::Sum::new()
                    .add(&sl.buf[st..sl.frame_len])
                    .finish();
                sl.buf[at..at + 2].copy_from_slice(&sum.to_be_bytes());
            }
            h.k.metas.push(sl.meta);
            h.frames
                .push(TcpKernel::parse(&sl.buf[..sl.frame_len]).unwrap());
        }
    }
    assert_eq!(seen, k);
    h.k.slots += k;
}

/// A guest segment.
#[derive(Clone, Debug)]
struct G {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    win: u16,
    opts: Vec<TcpOptionElement>,
    payload: Vec<u8>,
}

impl G {
    fn new(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> G {
        G {
            src,
            dst,
            sport,
            dport,
            seq: 0,
            ack: None,
            syn: false,
            fin: false,
            rst: false,
            win: 65535,
            opts: vec![],
            payload: vec![],
        }
    }
    fn seq(mut self, s: u32) -> G {
        self.seq = s;
        self
    }
    fn ack(mut self, a: u32) -> G {
        self.ack = Some(a);
        self
    }
    fn syn(mut self) -> G {
        self.syn = true;
        self
    }
    fn fin(mut self) -> G {
        self.fin = true;
        self
    }
    fn rst(mut self) -> G {
        self.rst = true;
        self
    }
    /// The guest's SYN-ACK at `seq` to our SYN `syn`: MSS 1460, window
    /// scale `ws`.
    fn syn_ack_to(self, seq: u32, syn: &Out, ws: u8) -> G {
        self.seq(seq).ack(syn.seq.wrapping_add(1)).syn().opts(vec![
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::WindowScale(ws),
        ])
    }
    fn win(mut self, w: u16) -> G {
        self.win = w;
        self
    }
    fn opts(mut self, o: Vec<TcpOptionElement>) -> G {
        self.opts = o;
        self
    }
    fn data(mut self, d: &[u8]) -> G {
        self.payload = d.to_vec();
        self
    }
    fn build(&self) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0);
        let mut b = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => b
                .ipv4(s.octets(), d.octets(), 64)
                .tcp(self.sport, self.dport, self.seq, self.win),
            (IpAddr::V6(s), IpAddr::V6(d)) => b
                .ipv6(s.octets(), d.octets(), 64)
                .tcp(self.sport, self.dport, self.seq, self.win),
            _ => panic!(),
        };
        if self.syn {
            b = b.syn();
        }
        if self.fin {
            b = b.fin();
        }
        if self.rst {
            b = b.rst();
        }
        if let Some(a) = self.ack {
            b = b.ack(a);
        }
        if !self.opts.is_empty() {
            b = b.options(&self.opts).unwrap();
        }
        let mut v = Vec::new();
        b.write(&mut v, &self.payload).unwrap();
        v
    }
}

use crate::wire::Mac;

impl H {
    fn new(cfg: Config) -> H {
        let k = TcpKernel {
            slots: 0,
            dead: HashMap::new(),
            sndbuf: 1 << 20,
            metas: vec![],
        };
        Harness::with(cfg, k)
    }

    /// Feeds guest segments as one batch, then drains.
    fn guest(&mut self, segs: &[G]) {
        self.guest_raw(&segs.iter().map(G::build).collect::<Vec<_>>());
    }

    /// Reports the fake socket's TCP_INFO as if the core had asked.
    fn report_info(&mut self, sock: SockId) {
        TcpKernel::carry_out(self, Action::QueryTcpInfo { sock }, &[]);
        self.drain(&[]);
    }

    /// A host peer connects to `listener`: the core asks to accept, and
    /// the fake kernel has a stream socket for it (`sndbuf`).
    fn accept(&mut self, listener: SockId) -> SockId {
        self.event(listener, SockEvent::Readable);
        let acts = self.take_actions();
        let Some(Action::Accept { listener: l, sock }) = acts.first().copied() else {
            panic!("{acts:?}")
        };
        assert_eq!(l, listener);
        let sndbuf = self.k.sndbuf;
        self.socks.insert(
            sock,
            FakeSock {
                kind: Some(SockKind::TcpStream),
                sndbuf,
                ..FakeSock::default()
            },
        );
        sock
    }

    fn only_sock(&self) -> SockId {
        let v: Vec<_> = self
            .socks
            .iter()
            .filter(|(_, s)| s.kind == Some(SockKind::TcpStream))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(v.len(), 1, "{:?}", self.socks.keys());
        v[0]
    }

    fn sock(&mut self, s: SockId) -> &mut FakeSock {
        self.socks.get_mut(&s).unwrap()
    }
}

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// An established guest-initiated connection: returns the harness, the
/// socket, our ISN + 1 and the guest's next sequence number.
struct Conn {
    h: H,
    sock: SockId,
    g: G,
    /// Next sequence number from us.
    our: u32,
    /// Next sequence number from the guest.
    their: u32,
}

impl Conn {
    /// A guest segment at `seq` that acknowledges everything from us.
    fn seg(&self, seq: u32) -> G {
        self.g.clone().seq(seq).ack(self.our)
    }

    /// The guest sends `data`; one segment comes back at once and
    /// acknowledges all of it.
    fn data_acked_at_once(&mut self, data: &[u8]) {
        let seg = self.seg(self.their).data(data);
        self.h.guest(&[seg]);
        let f = self.h.take_frames();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].ack, self.their.wrapping_add(data.len() as u32));
    }

    /// The host peer sends `data`: it waits in the socket, which turns
    /// readable.
    fn host_sends(&mut self, data: Vec<u8>) {
        self.h.sock(self.sock).rx = data;
        self.h.event(self.sock, SockEvent::Readable);
    }

    /// The host peer has `n` bytes for the guest, whose window is `win`
    /// (a segment says so first): the socket turns readable.
    fn host_data_to_window(&mut self, n: usize, win: u16) {
        self.h.sock(self.sock).rx = vec![5u8; n];
        let seg = self.seg(self.their).win(win);
        self.h.guest(&[seg]);
        self.h.event(self.sock, SockEvent::Readable);
    }

    /// The host peer closes its side: the socket reads end of stream.
    fn host_fin(&mut self) {
        self.h.sock(self.sock).eof = true;
        self.h.event(self.sock, SockEvent::ReadHangUp);
    }
}

const GISN: u32 = 0xffff_fff0; // wraps soon after the handshake

fn connect(cfg: Config, src: IpAddr, dst: IpAddr, ws: Option<u8>) -> Conn {
    connect_sndbuf(cfg, src, dst, ws, 1 << 20)
}

fn connect_sndbuf(cfg: Config, src: IpAddr, dst: IpAddr, ws: Option<u8>, sndbuf: u32) -> Conn {
    let mut h = H::new(cfg);
    h.k.sndbuf = sndbuf;
    let g = G::new(src, dst, 40000, 80);
    let mut opts = vec![TcpOptionElement::MaximumSegmentSize(1460)];
    if let Some(w) = ws {
        opts.push(TcpOptionElement::Noop);
        opts.push(TcpOptionElement::WindowScale(w));
    }
    h.guest(&[g.clone().seq(GISN).syn().opts(opts)]);
    let sock = h.only_sock();
    assert!(
        h.take_frames().is_empty(),
        "nothing before the connect completes"
    );
    h.event(sock, SockEvent::Connected(Ok(())));
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    let sa = &f[0];
    assert!(sa.syn && sa.ackf && !sa.fin && !sa.rst);
    assert_eq!(sa.ack, GISN.wrapping_add(1));
    let our = sa.seq.wrapping_add(1);
    let their = GISN.wrapping_add(1);
    h.guest(&[g.clone().seq(their).ack(our)]);
    let f = h.take_frames();
    assert!(f.is_empty(), "{f:?}");
    h.take_actions();
    Conn {
        h,
        sock,
        g,
        our,
        their,
    }
}

fn connect4() -> Conn {
    connect(capture_config(), v4(GUEST4), v4(PEER4), Some(7))
}

/// [`connect4`] without window scaling.
fn connect4_unscaled() -> Conn {
    connect(capture_config(), v4(GUEST4), v4(PEER4), Some(0))
}

fn inbound_cfg() -> Config {
    let mut cfg = capture_config();
    cfg.forwards.push(Forward::new(Proto::Tcp, 8080, 80));
    cfg
}

/// Host connects to a forwarded port; returns harness, flow socket, frames.
fn inbound(peer: SocketAddr) -> (H, SockId, Out) {
    let mut h = H::new(inbound_cfg());
    h.core.start(h.now);
    h.drain(&[]);
    let lst = SockId(LISTENER_BIT);
    let acts = h.take_actions();
    assert_eq!(
        acts[0],
        Action::Open {
            sock: lst,
            kind: SockKind::TcpListener,
            family: Family::V6,
            netns: Netns::Host
        }
    );
    assert!(matches!(acts[1], Action::Bind { addr, opts, .. }
        if addr == SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080) && !opts.v6_only));
    assert!(matches!(acts[2], Action::Listen { backlog: 128, .. }));
    let sock = h.accept(lst);
    h.event(
        sock,
        SockEvent::Accepted(Ok((
            peer,
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080),
        ))),
    );
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    (h, sock, f[0].clone())
}

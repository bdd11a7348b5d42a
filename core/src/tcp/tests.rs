//! TCP translation, driven the way a driver drives it: guest frames built
//! with etherparse go in, a small fake kernel answers the actions, and every
//! frame that comes out is re-parsed with etherparse (checksums verified).

use super::*;
use crate::action::Span;
use crate::fwd::{Forward, Proto};
use crate::testutil::{capture_config, GUEST_MAC};
use crate::{Config, Core, Csum, FrameBatch, FrameMeta, FrameRef};
use core::net::{Ipv4Addr, Ipv6Addr};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use std::collections::HashMap;

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

struct H {
    core: Core,
    now: Instant,
    socks: HashMap<SockId, FakeSock>,
    actions: Vec<Action>,
    frames: Vec<Out>,
    /// Frames of the last handle_peeked calls not yet reported with
    /// handle_tap_sent (when `auto_sent`).
    slots: usize,
    closed: Vec<SockId>,
    /// Sockets after `Close`.
    dead: HashMap<SockId, FakeSock>,
    /// SO_SNDBUF of new sockets.
    sndbuf: u32,
    /// Offload metadata of the peeked frames in `frames`, in order.
    metas: Vec<FrameMeta>,
}

const GUEST4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

fn g6() -> Ipv6Addr {
    "fd77::2".parse().unwrap()
}
fn p6() -> Ipv6Addr {
    "2001:db8::80".parse().unwrap()
}

fn parse_out(f: &[u8]) -> Option<Out> {
    let p = SlicedPacket::from_ethernet(f).expect("frame re-parses");
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        return None;
    };
    let (src, dst) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
            // Short frames (bare ACKs) are padded with zeros to 60 bytes.
            let end = usize::from(h.total_len) + 14;
            assert_eq!(end.max(60), f.len(), "IPv4 length");
            assert!(f[end..].iter().all(|&b| b == 0), "padding");
            assert_eq!(h.time_to_live, 255);
            assert_eq!(h.identification, 0);
            assert!(!h.dont_fragment);
            let c = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), c, "TCP checksum");
            (
                IpAddr::V4(h.source.into()),
                IpAddr::V4(h.destination.into()),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.hop_limit, 255);
            let c = t.to_header().calc_checksum_ipv6(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), c, "TCP checksum");
            (
                IpAddr::V6(h.source.into()),
                IpAddr::V6(h.destination.into()),
            )
        }
        _ => panic!("not IP"),
    };
    let opts: Vec<TcpOptionElement> = t.options_iterator().map(|o| o.unwrap()).collect();
    let mss = opts.iter().find_map(|o| match o {
        TcpOptionElement::MaximumSegmentSize(m) => Some(*m),
        _ => None,
    });
    let ws = opts.iter().find_map(|o| match o {
        TcpOptionElement::WindowScale(w) => Some(*w),
        _ => None,
    });
    assert_eq!(&f[0..6], &GUEST_MAC.0, "to the guest's MAC");
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
        let mut cfg = cfg;
        cfg.guest_mac = Some(GUEST_MAC);
        H {
            core: Core::new(cfg),
            now: Instant::from_millis(1000),
            socks: HashMap::new(),
            actions: vec![],
            frames: vec![],
            slots: 0,
            closed: vec![],
            dead: HashMap::new(),
            sndbuf: 1 << 20,
            metas: vec![],
        }
    }

    /// Feeds guest segments as one batch, then drains.
    fn guest(&mut self, segs: &[G]) {
        let mut buf = Vec::new();
        let mut refs = Vec::new();
        for s in segs {
            let f = s.build();
            refs.push(FrameRef {
                offset: buf.len() as u32,
                len: f.len() as u32,
            });
            buf.extend_from_slice(&f);
        }
        self.core
            .handle_tap_batch(self.now, &FrameBatch::new(&buf, &refs));
        self.drain(&buf);
    }

    fn guest_raw(&mut self, frames: &[Vec<u8>]) {
        let mut buf = Vec::new();
        let mut refs = Vec::new();
        for f in frames {
            refs.push(FrameRef {
                offset: buf.len() as u32,
                len: f.len() as u32,
            });
            buf.extend_from_slice(f);
        }
        self.core
            .handle_tap_batch(self.now, &FrameBatch::new(&buf, &refs));
        self.drain(&buf);
    }

    fn event(&mut self, sock: SockId, ev: SockEvent) {
        self.core.handle_sock_event(self.now, sock, ev);
        self.drain(&[]);
    }

    /// Reports the fake socket's TCP_INFO as if the core had asked.
    fn report_info(&mut self, sock: SockId) {
        self.carry_out(Action::QueryTcpInfo { sock }, &[]);
        self.drain(&[]);
    }

    fn timeout(&mut self) {
        self.core.handle_timeout(self.now);
        // Every timer that ran moved on: no busy loop.
        assert!(
            self.core.tcp.poll_timeout().is_none_or(|t| t > self.now),
            "timer still due after handle_timeout"
        );
        self.drain(&[]);
    }

    /// Runs time forward in steps until `until` ms have passed, firing timers.
    fn run_for(&mut self, ms: u64) {
        let end = self.now.saturating_add(Duration::from_millis(ms));
        for _ in 0..100_000 {
            match self.core.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.timeout();
                }
                _ => break,
            }
        }
        self.now = end;
        self.timeout();
    }

    fn poll_frames(&mut self) {
        let mut tx = vec![0u8; 70000];
        while let Some(n) = self.core.poll_frame(&mut tx) {
            if let Some(o) = parse_out(&tx[..n]) {
                self.frames.push(o);
            }
        }
    }

    fn drain(&mut self, buf: &[u8]) {
        for _ in 0..10_000 {
            let Some(a) = self.core.poll_action() else {
                break;
            };
            self.actions.push(a);
            self.carry_out(a, buf);
        }
        self.poll_frames();
    }

    fn carry_out(&mut self, a: Action, buf: &[u8]) {
        let peek_offset = self.core.config().peek_offset;
        match a {
            Action::Open { sock, kind, .. } => {
                self.socks.insert(
                    sock,
                    FakeSock {
                        kind: Some(kind),
                        sndbuf: self.sndbuf,
                        ..FakeSock::default()
                    },
                );
            }
            Action::Connect { sock, addr } => {
                self.socks.get_mut(&sock).unwrap().connect = Some(addr);
            }
            Action::SetInterest { sock, interest } => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.interest = Some(interest);
                }
            }
            Action::SetOption { sock, opt } => {
                let s = self.socks.get_mut(&sock).expect("option on open socket");
                match opt {
                    SockOpt::PeekOffset(o) => s.peek_off = Some(o as usize),
                    SockOpt::TcpMaxSeg(m) => s.mss = Some(m),
                    SockOpt::ResetOnClose => s.linger_zero = true,
                    _ => {}
                }
            }
            Action::Send { sock, spans } => {
                let data: Vec<u8> = self
                    .core
                    .spans(spans)
                    .iter()
                    .flat_map(|s: &Span| {
                        buf[s.offset as usize..(s.offset + s.len) as usize].to_vec()
                    })
                    .collect();
                let s = self.socks.get_mut(&sock).unwrap();
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
                let space = SendSpace {
                    sndbuf: s.sndbuf,
                    queued: s.outq,
                };
                self.core.handle_sock_event(
                    self.now,
                    sock,
                    SockEvent::StreamSent { sent: r, space },
                );
            }
            Action::QuerySendSpace { sock } => {
                let s = &self.socks[&sock];
                let space = SendSpace {
                    sndbuf: s.sndbuf,
                    queued: s.outq,
                };
                self.core
                    .handle_sock_event(self.now, sock, SockEvent::SendSpace(space));
            }
            Action::QueryTcpInfo { sock } => {
                let s = &self.socks[&sock];
                let info = TcpInfo {
                    sndbuf: s.sndbuf,
                    queued: s.outq,
                    snd_mss: 1460,
                    min_rtt_us: s.min_rtt_us,
                    snd_wnd: 65535,
                    ..TcpInfo::default()
                };
                self.core
                    .handle_sock_event(self.now, sock, SockEvent::TcpInfo(info));
            }
            Action::Peek {
                sock,
                skip,
                len,
                mss,
                room,
            } => {
                self.poll_frames();
                let s = self.socks.get_mut(&sock).unwrap();
                let start = if peek_offset {
                    assert_eq!(skip, 0);
                    s.peek_off.expect("SO_PEEK_OFF set before the first peek")
                } else {
                    assert!(s.peek_off.is_none());
                    skip as usize
                };
                let nslots = 64;
                let mut bufs: Vec<Vec<u8>> = (0..nslots)
                    .map(|_| vec![0u8; room as usize + mss as usize])
                    .collect();
                let avail = s.rx.len().saturating_sub(start);
                let n = avail.min(len as usize).min(nslots * mss as usize);
                let r = if let Some(e) = s.peek_err {
                    Err(e)
                } else if n == 0 && s.eof {
                    Ok(0)
                } else if n == 0 {
                    Err(Errno::EAGAIN)
                } else {
                    let data = &s.rx[start..start + n];
                    for (i, chunk) in data.chunks(mss as usize).enumerate() {
                        bufs[i][room as usize..room as usize + chunk.len()].copy_from_slice(chunk);
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
                let k = self.core.handle_peeked(self.now, sock, r, &mut slots);
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
                        self.metas.push(sl.meta);
                        self.frames
                            .push(parse_out(&sl.buf[..sl.frame_len]).unwrap());
                    }
                }
                assert_eq!(seen, k);
                self.slots += k;
            }
            Action::Consume { sock, len } => {
                let s = self.socks.get_mut(&sock).unwrap();
                assert!(len as usize <= s.rx.len(), "consume beyond data");
                s.rx.drain(..len as usize);
                if let Some(o) = &mut s.peek_off {
                    *o = o.saturating_sub(len as usize);
                }
            }
            Action::ShutdownWrite { sock } => {
                self.socks.get_mut(&sock).unwrap().shut_wr = true;
            }
            Action::Close { sock } => {
                if let Some(s) = self.socks.remove(&sock) {
                    self.dead.insert(sock, s);
                }
                self.closed.push(sock);
            }
            Action::Accept { .. } | Action::Bind { .. } | Action::Listen { .. } => {}
            _ => {}
        }
    }

    fn take_frames(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.frames)
    }

    fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
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

const GISN: u32 = 0xffff_fff0; // wraps soon after the handshake

fn connect(cfg: Config, src: IpAddr, dst: IpAddr, ws: Option<u8>) -> Conn {
    connect_sndbuf(cfg, src, dst, ws, 1 << 20)
}

fn connect_sndbuf(cfg: Config, src: IpAddr, dst: IpAddr, ws: Option<u8>, sndbuf: u32) -> Conn {
    let mut h = H::new(cfg);
    h.sndbuf = sndbuf;
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
    assert!(h.take_frames().is_empty());
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

// --- handshakes -------------------------------------------------------------

#[test]
fn guest_connect_v4() {
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 80);
    h.guest(&[g.clone().seq(1000).syn().opts(vec![
        TcpOptionElement::MaximumSegmentSize(1400),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ])]);
    let sock = h.only_sock();
    let acts = h.take_actions();
    assert!(matches!(
        acts[0],
        Action::Open {
            kind: SockKind::TcpStream,
            family: Family::V4,
            netns: Netns::Host,
            ..
        }
    ));
    assert!(acts.contains(&Action::SetOption {
        sock,
        opt: SockOpt::TcpMaxSeg(1400)
    }));
    assert_eq!(
        acts.last(),
        Some(&Action::Connect {
            sock,
            addr: SocketAddr::new(v4(PEER4), 80)
        })
    );
    assert_eq!(h.core.flow_count(), 1);
    // A retransmitted SYN while connecting changes nothing.
    h.guest(&[g.clone().seq(1000).syn()]);
    assert_eq!(h.core.flow_count(), 1);
    assert!(h.take_frames().is_empty());
    h.event(sock, SockEvent::Connected(Ok(())));
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    let sa = &f[0];
    assert!(sa.syn && sa.ackf);
    assert_eq!(
        (sa.src, sa.dst, sa.sport, sa.dport),
        (v4(PEER4), v4(GUEST4), 80, 40000)
    );
    assert_eq!(sa.ack, 1001);
    // MSS, NOP, window scale: nothing else.
    assert_eq!(
        sa.opts,
        vec![
            TcpOptionElement::MaximumSegmentSize(61440),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(8)
        ]
    );
    assert!(u32::from(sa.win) <= 1 << 20);
    h.guest(&[g.seq(1001).ack(sa.seq.wrapping_add(1))]);
    assert!(h.take_frames().is_empty());
    assert_eq!(h.core.tcp_stats().opened, 1);
}

#[test]
fn guest_connect_v6_without_window_scale() {
    let mut cfg = capture_config();
    cfg.mtu = Some(1500);
    let mut c = connect(cfg, IpAddr::V6(g6()), IpAddr::V6(p6()), None);
    // Data from the host: frames fit the MTU, windows unscaled.
    c.h.sock(c.sock).rx = vec![7u8; 3000];
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 3);
    assert!(f.iter().all(|o| o.payload.len() <= 1440));
    assert_eq!(f[0].seq, c.our);
    assert_eq!(f[0].src, IpAddr::V6(p6()));
}

#[test]
fn gateway_maps_to_host_loopback_and_local_acks_at_once() {
    let mut c = connect(
        capture_config(),
        v4(GUEST4),
        v4(Ipv4Addr::new(10, 77, 0, 1)),
        Some(7),
    );
    let s = c.h.sock(c.sock);
    assert_eq!(
        s.connect,
        Some(SocketAddr::new(v4(Ipv4Addr::LOCALHOST), 80))
    );
    // Local peer: data is acknowledged without the 10 ms delay.
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(b"hello")]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, c.their.wrapping_add(5));
}

#[test]
fn refused_connect_resets_at_once() {
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 81);
    h.guest(&[g.seq(5).syn()]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Err(Errno::ECONNREFUSED)));
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && f[0].ackf);
    assert_eq!(f[0].ack, 6);
    assert!(h.closed.contains(&sock));
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
}

#[test]
fn open_failure_resets() {
    let mut h = H::new(capture_config());
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 40000, 81).seq(5).syn()]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::OpenFailed(Errno::EMFILE));
    let f = h.take_frames();
    assert!(f[0].rst);
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
    assert!(!h.closed.contains(&sock), "a failed open needs no close");
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
    h.event(lst, SockEvent::Readable);
    let acts = h.take_actions();
    let Some(Action::Accept { listener, sock }) = acts.first().copied() else {
        panic!("{acts:?}")
    };
    assert_eq!(listener, lst);
    h.socks.insert(
        sock,
        FakeSock {
            kind: Some(SockKind::TcpStream),
            sndbuf: 1 << 20,
            ..FakeSock::default()
        },
    );
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

#[test]
fn accept_out_of_descriptors_pauses_the_listener() {
    let mut h = H::new(inbound_cfg());
    h.core.start(h.now);
    h.drain(&[]);
    h.take_actions();
    let lst = SockId(LISTENER_BIT);
    let watched = Interest {
        readable: true,
        ..Interest::default()
    };
    for round in 1..=2u64 {
        h.event(lst, SockEvent::Readable);
        let acts = h.take_actions();
        let Some(Action::Accept { listener, sock }) = acts.first().copied() else {
            panic!("{acts:?}")
        };
        assert_eq!(listener, lst);
        h.event(sock, SockEvent::Accepted(Err(Errno::EMFILE)));
        // The connection waits in the backlog: the listener stays readable,
        // so it is not watched for a while instead of failing again at once.
        let acts = h.take_actions();
        assert_eq!(
            acts,
            vec![Action::SetInterest {
                sock: lst,
                interest: Interest::default()
            }]
        );
        assert_eq!(h.core.flow_count(), 0);
        assert_eq!(h.core.listen_stats().accept_pauses, round);
        // Readiness reported before the pause took effect is ignored.
        h.event(lst, SockEvent::Readable);
        assert!(h.take_actions().is_empty());
        h.run_for(150);
        assert!(h.take_actions().is_empty());
        h.run_for(100);
        assert_eq!(
            h.take_actions(),
            vec![Action::SetInterest {
                sock: lst,
                interest: watched
            }]
        );
        assert!(h.core.poll_timeout().is_none_or(|t| t > h.now));
    }
    // Other errors (the peer gave up) do not pause.
    h.event(lst, SockEvent::Readable);
    let Some(Action::Accept { sock, .. }) = h.take_actions().first().copied() else {
        panic!()
    };
    h.event(sock, SockEvent::Accepted(Err(Errno::ECONNRESET)));
    assert!(h.take_actions().is_empty());
    assert_eq!(h.core.listen_stats().accept_pauses, 2);
    h.event(lst, SockEvent::Readable);
    assert!(matches!(
        h.take_actions().first(),
        Some(Action::Accept { .. })
    ));
}

#[test]
fn inbound_v4_server_speaks_first() {
    let peer = SocketAddr::new("::ffff:192.0.2.9".parse().unwrap(), 5555);
    let (mut h, sock, syn) = inbound(peer);
    assert!(syn.syn && !syn.ackf);
    assert_eq!(
        (syn.src, syn.dst, syn.sport, syn.dport),
        (v4(Ipv4Addr::new(192, 0, 2, 9)), v4(GUEST4), 5555, 80)
    );
    assert_eq!(syn.ws, Some(8));
    assert!(syn.mss.is_some());
    // The guest answers; we ACK at once even though no data waits.
    let g = G::new(v4(GUEST4), syn.src, 80, 5555);
    h.guest(&[g
        .clone()
        .seq(777)
        .ack(syn.seq.wrapping_add(1))
        .syn()
        .opts(vec![
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::WindowScale(2),
        ])]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].ackf && !f[0].syn && f[0].payload.is_empty());
    assert_eq!(f[0].ack, 778);
    assert_eq!(f[0].seq, syn.seq.wrapping_add(1));
    // Host data flows to the guest.
    h.sock(sock).rx = b"220 banner\r\n".to_vec();
    h.event(sock, SockEvent::Readable);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload, b"220 banner\r\n");
    assert!(f[0].psh);
}

#[test]
fn inbound_v6_loopback_peer_appears_as_gateway() {
    let peer = SocketAddr::new("::1".parse().unwrap(), 6000);
    let (mut h, sock, syn) = inbound(peer);
    assert_eq!(syn.src, "fd77::1".parse::<IpAddr>().unwrap());
    assert_eq!(syn.dst, IpAddr::V6(g6()));
    // Guest refuses: RST closes.
    let g = G::new(syn.dst, syn.src, 80, 6000);
    h.guest(&[g.seq(0).ack(syn.seq.wrapping_add(1)).rst()]);
    assert!(h.closed.contains(&sock));
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 1, "the listener stays");
}

#[test]
fn inbound_handshake_timeout() {
    let peer = SocketAddr::new("192.0.2.9".parse().unwrap(), 5555);
    let (mut h, sock, syn) = inbound(peer);
    h.run_for(1_100);
    let f = h.take_frames();
    assert_eq!(f.len(), 1, "SYN sent again");
    assert_eq!(f[0], syn);
    h.run_for(7_900);
    assert_eq!(h.core.flow_count(), 1);
    h.run_for(1_100);
    assert_eq!(h.core.flow_count(), 0);
    assert!(h.closed.contains(&sock));
    let f = h.take_frames();
    assert!(f.last().unwrap().rst);
}

// --- guest → host -------------------------------------------------------------

#[test]
fn guest_data_partial_write_acks_only_written() {
    let mut c = connect4();
    c.h.sock(c.sock).send_room = Some(1500);
    let segs: Vec<G> = (0..3u32)
        .map(|i| {
            c.g.clone()
                .seq(c.their.wrapping_add(i * 1000))
                .ack(c.our)
                .data(&[i as u8; 1000])
        })
        .collect();
    c.h.guest(&segs);
    let sends: Vec<_> =
        c.h.take_actions()
            .into_iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .collect();
    assert_eq!(sends.len(), 1, "one send per flow per batch");
    assert_eq!(c.h.sock(c.sock).written.len(), 1500);
    // The ACK goes out at once with a closed window: the buffer is full,
    // whatever TCP_INFO says, until EPOLLOUT.
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, c.their.wrapping_add(1500));
    assert_eq!(f[0].win, 0);
    assert_eq!(c.h.core.tcp_stats().partial_writes, 1);
    assert!(c.h.sock(c.sock).interest.unwrap().writable);
    // EAGAIN: nothing acknowledged, window closed.
    c.h.sock(c.sock).send_room = Some(0);
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their.wrapping_add(1500))
        .ack(c.our)
        .data(&[9; 500])]);
    c.h.run_for(10);
    let f = c.h.take_frames();
    assert!(f.iter().all(|o| o.ack == c.their.wrapping_add(1500)));
    // The retransmission goes through once the socket takes it again.
    c.h.sock(c.sock).send_room = None;
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their.wrapping_add(1500))
        .ack(c.our)
        .data(&[1; 1500])]);
    c.h.run_for(10);
    let f = c.h.take_frames();
    assert_eq!(f.last().unwrap().ack, c.their.wrapping_add(3000));
    let w = &c.h.sock(c.sock).written;
    assert_eq!(&w[..1000], &[0u8; 1000][..]);
    assert_eq!(&w[1000..1500], &[1u8; 500][..]);
    assert_eq!(&w[1500..], &[1u8; 1500][..]);
}

#[test]
fn window_never_above_socket_free_space() {
    let mut c = connect(capture_config(), v4(GUEST4), v4(PEER4), Some(0));
    let s = c.h.sock(c.sock);
    s.sndbuf = 10_000;
    let mut their = c.their;
    for round in 0..8u32 {
        let seg = c.g.clone().seq(their).ack(c.our).data(&[round as u8; 3000]);
        c.h.guest(&[seg]);
        c.h.run_for(10);
        let s = c.h.sock(c.sock);
        let free = s.sndbuf - s.outq;
        for f in c.h.take_frames() {
            let w = u32::from(f.win) << MAX_WS;
            assert!(w <= free, "window {w} > free {free}");
            their = f.ack;
        }
        if round == 2 {
            // The host peer reads everything: the socket drains.
            c.h.sock(c.sock).outq = 0;
            c.h.event(c.sock, SockEvent::Writable);
            let f = c.h.take_frames();
            assert_eq!(f.len(), 1, "window update once the socket drains");
            assert_eq!(u32::from(f[0].win) << MAX_WS, 9375 / 256 * 256);
        }
    }
    assert_eq!(
        c.h.sock(c.sock).written.len() as u32,
        their.wrapping_sub(c.their)
    );
}

#[test]
fn out_of_order_gets_three_duplicate_acks_and_reorder_in_batch() {
    let mut c = connect4();
    let t = c.their;
    // Reordered within a batch: both written, in order.
    c.h.guest(&[
        c.g.clone().seq(t.wrapping_add(3)).ack(c.our).data(b"def"),
        c.g.clone().seq(t).ack(c.our).data(b"abc"),
    ]);
    assert_eq!(c.h.sock(c.sock).written, b"abcdef");
    c.h.run_for(10);
    c.h.take_frames();
    // A gap: the ACK and three duplicates for the missing bytes (what a
    // guest without SACK needs for a fast retransmission), once.
    c.h.guest(&[c.g.clone().seq(t.wrapping_add(10)).ack(c.our).data(b"zz")]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 4);
    assert!(f.iter().all(|o| o.ack == t.wrapping_add(6)));
    c.h.guest(&[c.g.clone().seq(t.wrapping_add(12)).ack(c.our).data(b"yy")]);
    assert!(c.h.take_frames().len() <= 1);
    assert_eq!(c.h.sock(c.sock).written, b"abcdef");
}

#[test]
fn keepalive_is_answered() {
    let mut c = connect4();
    c.h.guest(&[c.g.clone().seq(c.their.wrapping_sub(1)).ack(c.our)]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, c.their);
    assert_eq!(c.h.core.tcp_stats().fast_retransmits, 0);
}

/// Upstream's tap-side keepalives: 30 s without a segment from the guest
/// (`KEEPALIVE_INTERVAL`) bring an ACK one byte before our next sequence
/// number, and another every 30 s while the guest stays silent; a guest
/// that answers keeps the connection, one that forgot it resets it.
#[test]
fn silent_guest_gets_keepalives_and_a_forgetful_one_resets() {
    let mut c = connect4();
    c.h.run_for(29_900);
    assert!(c.h.take_frames().is_empty(), "nothing before 30 s");
    c.h.run_for(200);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1, "{f:?}");
    let k = &f[0];
    assert!(k.ackf && !k.syn && !k.fin && !k.rst && k.payload.is_empty());
    assert_eq!((k.seq, k.ack), (c.our.wrapping_sub(1), c.their));
    assert_eq!(c.h.core.tcp_stats().keepalives, 1);
    // The guest answers (an ACK of what it has): nothing more to say, and
    // the next keepalive is 30 s after that answer.
    c.h.run_for(10_000);
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our)]);
    assert!(c.h.take_frames().is_empty());
    c.h.run_for(29_900);
    assert!(c.h.take_frames().is_empty());
    c.h.run_for(200);
    assert_eq!(c.h.take_frames().len(), 1);
    // Silence: one every 30 s.
    c.h.run_for(90_000);
    assert_eq!(c.h.take_frames().len(), 3);
    assert_eq!(c.h.core.tcp_stats().keepalives, 5);
    assert_eq!(c.h.core.flow_count(), 1);
    // A guest that rebooted answers the next one with a reset.
    c.h.run_for(30_000);
    assert_eq!(c.h.take_frames().len(), 1);
    c.h.guest(&[c.g.clone().seq(c.their).rst()]);
    assert_eq!(c.h.core.flow_count(), 0);
    assert!(c.h.closed.contains(&c.sock));
}

/// A guest that sends keeps its connection free of keepalives; so does
/// data in flight (the retransmission timer watches the guest then); a
/// connection the guest half-closed (its FIN_WAIT_2, which Linux forgets
/// after a minute once the application closed) gets them.
#[test]
fn keepalives_only_for_silent_guests_half_closed_included() {
    let mut c = connect4();
    let mut their = c.their;
    for _ in 0..5 {
        c.h.run_for(20_000);
        c.h.guest(&[c.g.clone().seq(their).ack(c.our).data(b"x")]);
        their = their.wrapping_add(1);
        c.h.take_frames();
    }
    assert_eq!(c.h.core.tcp_stats().keepalives, 0);
    // Our data in flight, unacknowledged: retransmissions only.
    c.h.sock(c.sock).rx = vec![1u8; 10];
    c.h.event(c.sock, SockEvent::Readable);
    c.h.run_for(40_000);
    assert!(c.h.core.tcp_stats().retransmits > 0);
    assert_eq!(c.h.core.tcp_stats().keepalives, 0);
    c.h.guest(&[c.g.clone().seq(their).ack(c.our.wrapping_add(10)).fin()]);
    c.h.take_frames();
    // Half-closed by the guest; the host side stays open.
    c.h.run_for(30_100);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].seq, c.our.wrapping_add(9));
    assert_eq!(f[0].ack, their.wrapping_add(1));
    assert_eq!(c.h.core.tcp_stats().keepalives, 1);
}

// --- host → guest -------------------------------------------------------------

fn host_data(peek_offset: bool) {
    let mut cfg = capture_config();
    cfg.peek_offset = peek_offset;
    let mut c = connect(cfg, v4(GUEST4), v4(PEER4), Some(7));
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    c.h.sock(c.sock).rx = data.clone();
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    // MSS 1460 from the guest; window 65535 << 7.
    assert_eq!(f.len(), 14);
    let mut got = Vec::new();
    let mut seq = c.our;
    for o in &f {
        assert_eq!(o.seq, seq);
        assert!(o.payload.len() <= 1460);
        assert_eq!(o.ack, c.their);
        seq = seq.wrapping_add(o.payload.len() as u32);
        got.extend_from_slice(&o.payload);
    }
    assert_eq!(got, data);
    // Level-triggered readable again: nothing new to send, stalled.
    c.h.event(c.sock, SockEvent::Readable);
    assert!(c.h.take_frames().is_empty());
    // The guest acknowledges 5000 bytes: exactly those are consumed.
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our.wrapping_add(5000))]);
    let acts = c.h.take_actions();
    assert!(acts.contains(&Action::Consume {
        sock: c.sock,
        len: 5000
    }));
    assert_eq!(c.h.sock(c.sock).rx.len(), 15_000);
    // More data arrives; only the new bytes go out.
    c.h.sock(c.sock).rx.extend_from_slice(b"tail");
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload, b"tail");
    assert_eq!(f[0].seq, seq);
}

/// On a link that segments TCP (a tap with virtio-net headers), host data
/// goes out in frames of as many whole MSS as 64 KiB hold (44 at MSS 1460),
/// each with GSO metadata and a partial checksum that completes to the
/// right one; the bytes and sequence numbers are those of plain frames.
#[test]
fn host_data_in_gso_frames() {
    for (src, dst) in [
        (v4(GUEST4), v4(PEER4)),
        (IpAddr::V6(g6()), IpAddr::V6(p6())),
    ] {
        let mut cfg = capture_config();
        cfg.link_offload = crate::LinkOffload::ALL;
        let mut c = connect(cfg, src, dst, Some(7));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        c.h.sock(c.sock).rx = data.clone();
        c.h.event(c.sock, SockEvent::Readable);
        let f = c.h.take_frames();
        let metas = std::mem::take(&mut c.h.metas);
        assert_eq!(f.len(), metas.len());
        let l4off = l4_offset(src.is_ipv6());
        let hdrs = l4off + 20;
        let per_frame = (crate::MAX_FRAME - hdrs) / 1460 * 1460;
        assert_eq!(per_frame, 44 * 1460);
        assert_eq!(f.len(), data.len().div_ceil(per_frame));
        let mut got = Vec::new();
        let mut seq = c.our;
        for (o, m) in f.iter().zip(&metas) {
            assert_eq!(o.seq, seq);
            assert!(o.payload.len() == per_frame || got.len() + o.payload.len() == data.len());
            assert_eq!(
                m.csum,
                Csum::Partial {
                    start: l4off as u16,
                    offset: 16
                }
            );
            let kind = if src.is_ipv6() {
                crate::GsoKind::Tcp6
            } else {
                crate::GsoKind::Tcp4
            };
            let gso = (o.payload.len() > 1460).then_some(crate::Gso {
                kind,
                size: 1460,
                hdr_len: hdrs as u16,
                ecn: false,
            });
            assert_eq!(m.gso, gso);
            seq = seq.wrapping_add(o.payload.len() as u32);
            got.extend_from_slice(&o.payload);
        }
        assert_eq!(got, data);
        assert_eq!(c.h.core.counters().gso_frames_out, f.len() as u64);
        // Without offload, the same bytes in MSS-sized, complete frames.
        let mut c = connect(capture_config(), src, dst, Some(7));
        c.h.sock(c.sock).rx = data.clone();
        c.h.event(c.sock, SockEvent::Readable);
        let f = c.h.take_frames();
        assert!(c.h.metas.iter().all(|m| *m == FrameMeta::PLAIN));
        // (one peek's worth: the harness lends 64 slots)
        assert_eq!(f.len(), 64);
        assert!(f.iter().all(|o| o.payload.len() == 1460));
        let plain: Vec<u8> = f.iter().flat_map(|o| o.payload.clone()).collect();
        assert_eq!(plain, data[..plain.len()]);
    }
}

#[test]
fn host_data_without_peek_offset() {
    host_data(false);
}

#[test]
fn host_data_with_peek_offset() {
    host_data(true);
}

#[test]
fn retransmit_after_timeout_then_reset() {
    let mut c = connect4();
    c.h.sock(c.sock).rx = vec![1u8; 100];
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 1);
    c.h.run_for(900);
    assert!(c.h.take_frames().is_empty());
    c.h.run_for(200);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1, "retransmitted");
    assert_eq!(f[0].seq, c.our);
    assert_eq!(c.h.core.tcp_stats().retransmits, 1);
    // Never acknowledged: the timeout doubles each time (2, 4, ... 64 s), so
    // the seventh retransmission goes out 127 s after the first send.
    let mut at = 1_000u64;
    for k in 2..=7u64 {
        let rto = 1_000u64 << (k - 1);
        c.h.run_for(rto - 200);
        assert_eq!(
            c.h.core.tcp_stats().retransmits,
            k - 1,
            "not before {rto} ms"
        );
        c.h.run_for(200);
        assert_eq!(c.h.core.tcp_stats().retransmits, k, "after {rto} ms");
        let f = c.h.take_frames();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].seq, c.our);
        at += rto;
    }
    assert_eq!(at, 127_000);
    // The last one waits for the ceiling (120 s), then the reset.
    c.h.run_for(119_000);
    assert_eq!(c.h.core.tcp_stats().retransmits, 7);
    assert_eq!(c.h.core.flow_count(), 1);
    assert!(c.h.take_frames().is_empty());
    c.h.run_for(1_000);
    let f = c.h.take_frames();
    assert!(f.last().unwrap().rst);
    assert!(!f.last().unwrap().ackf, "RST alone");
    // Closed plainly: what the socket holds for the host peer still goes.
    assert!(!c.h.dead[&c.sock].linger_zero);
    assert_eq!(c.h.core.flow_count(), 0);
    assert_eq!(c.h.core.socket_count(), 0);
}

#[test]
fn silent_guest_keeps_connection_for_a_minute() {
    let mut c = connect4();
    c.h.sock(c.sock).rx = vec![1u8; 100];
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 1);
    // A minute of silence: retransmissions at 1, 3, 7, 15, 31 s only.
    c.h.run_for(60_000);
    assert_eq!(c.h.take_frames().len(), 5);
    assert_eq!(c.h.core.tcp_stats().retransmits, 5);
    assert_eq!(c.h.core.flow_count(), 1);
    // The next one (63 s) reaches the guest, which answers it.
    c.h.run_for(3_100);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload.len(), 100);
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our.wrapping_add(100))]);
    // Progress: the timeout starts again from 1 s.
    c.h.sock(c.sock).rx.extend_from_slice(&[2u8; 10]);
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 1);
    c.h.run_for(1_100);
    assert_eq!(c.h.take_frames().len(), 1, "retransmitted after 1 s");
    assert_eq!(c.h.core.tcp_stats().timeouts, 0);
}

#[test]
fn fast_retransmit_on_duplicate_acks() {
    let mut c = connect4();
    c.h.sock(c.sock).rx = vec![1u8; 4000];
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 3);
    let dup = c.g.clone().seq(c.their).ack(c.our.wrapping_add(1460));
    c.h.guest(std::slice::from_ref(&dup));
    assert!(c.h.take_frames().is_empty());
    c.h.guest(std::slice::from_ref(&dup));
    c.h.guest(&[dup]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].seq, c.our.wrapping_add(1460));
    assert_eq!(c.h.core.tcp_stats().fast_retransmits, 1);
}

#[test]
fn tap_sent_rewinds_unsent_frames() {
    let mut c = connect4();
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    c.h.sock(c.sock).rx = data.clone();
    c.h.core.handle_tap_sent(c.h.now, 0); // reset the count
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 4);
    // Only the first two reached the guest.
    c.h.core.handle_tap_sent(c.h.now, 2);
    c.h.drain(&[]);
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].seq, c.our.wrapping_add(2920));
    assert_eq!(f[0].payload, &data[2920..4380]);
}

#[test]
fn zero_window_probe_and_reopen() {
    let mut c = connect(capture_config(), v4(GUEST4), v4(PEER4), Some(0));
    c.h.sock(c.sock).rx = vec![5u8; 3000];
    // The guest closes its window.
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).win(0)]);
    c.h.event(c.sock, SockEvent::Readable);
    assert!(c.h.take_frames().is_empty());
    // Probe: one byte after the retransmission timeout.
    c.h.run_for(2100);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload.len(), 1);
    // Guest still full: keeps probing, no reset.
    for _ in 0..10 {
        c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).win(0)]);
        c.h.run_for(2100);
    }
    assert_eq!(c.h.core.flow_count(), 1);
    c.h.take_frames();
    // Window reopens: data flows from the last acknowledged byte.
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).win(2000)]);
    let f = c.h.take_frames();
    let total: usize = f.iter().map(|o| o.payload.len()).sum();
    assert_eq!(total, 2000);
    assert_eq!(f[0].seq, c.our);
}

#[test]
fn shrinking_window_with_data_in_flight_is_ignored() {
    let mut c = connect(capture_config(), v4(GUEST4), v4(PEER4), Some(0));
    c.h.sock(c.sock).rx = vec![5u8; 10_000];
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).win(4000)]);
    c.h.event(c.sock, SockEvent::Readable);
    let sent: usize = c.h.take_frames().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 4000);
    // ACK of 1000 bytes with a zero window while 3000 are in flight: the
    // window's right edge stays where it was.
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their)
        .ack(c.our.wrapping_add(1000))
        .win(0)]);
    let f = c.h.take_frames();
    let sent: usize = f.iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 1000);
}

// --- closing --------------------------------------------------------------------

#[test]
fn guest_half_close_then_host_close() {
    let mut c = connect4();
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(b"bye").fin()]);
    assert!(c.h.sock(c.sock).shut_wr);
    assert_eq!(c.h.sock(c.sock).written, b"bye");
    let f = c.h.take_frames();
    assert_eq!(f.last().unwrap().ack, c.their.wrapping_add(4));
    // The host keeps sending after our shutdown.
    c.h.sock(c.sock).rx = b"more".to_vec();
    c.h.sock(c.sock).eof = true;
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f[0].payload, b"more");
    c.h.event(c.sock, SockEvent::ReadHangUp);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].fin && f[0].ackf);
    assert_eq!(f[0].seq, c.our.wrapping_add(4));
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their.wrapping_add(4))
        .ack(c.our.wrapping_add(5))]);
    assert!(c.h.closed.contains(&c.sock));
    assert!(!c.h.dead[&c.sock].linger_zero, "an orderly close: FIN");
    assert_eq!(c.h.core.flow_count(), 0);
    assert_eq!(c.h.core.socket_count(), 0);
}

#[test]
fn host_half_close_then_guest_close() {
    let mut c = connect4();
    c.h.sock(c.sock).eof = true;
    c.h.event(c.sock, SockEvent::ReadHangUp);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].fin);
    // The guest acknowledges our FIN and keeps sending.
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their)
        .ack(c.our.wrapping_add(1))
        .data(b"still")]);
    assert_eq!(c.h.sock(c.sock).written, b"still");
    assert_eq!(c.h.core.flow_count(), 1);
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their.wrapping_add(5))
        .ack(c.our.wrapping_add(1))
        .fin()]);
    let f = c.h.take_frames();
    assert_eq!(f.last().unwrap().ack, c.their.wrapping_add(6));
    assert!(c.h.closed.contains(&c.sock));
    assert_eq!(c.h.core.flow_count(), 0);
    assert_eq!(c.h.core.socket_count(), 0);
}

#[test]
fn lost_fin_is_retransmitted() {
    let mut c = connect4();
    c.h.sock(c.sock).eof = true;
    c.h.event(c.sock, SockEvent::ReadHangUp);
    assert!(c.h.take_frames()[0].fin);
    c.h.run_for(2100);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].fin);
    assert_eq!(f[0].seq, c.our);
}

#[test]
fn resets_both_ways() {
    // A guest RST resets the host peer (SO_LINGER 0, then close), as
    // upstream since 2026: a plain close would send it a FIN.
    let mut c = connect4();
    c.h.guest(&[c.g.clone().seq(c.their).rst()]);
    assert!(c.h.closed.contains(&c.sock));
    assert!(c.h.dead[&c.sock].linger_zero, "guest RST closed with a FIN");
    assert!(c.h.take_frames().is_empty());
    assert_eq!(c.h.core.flow_count(), 0);
    // The same with data in the batch before the RST.
    let mut c = connect4();
    let g = c.g.clone();
    c.h.guest(&[
        g.clone().seq(c.their).ack(c.our).data(b"abc"),
        g.seq(c.their.wrapping_add(3)).rst(),
    ]);
    assert_eq!(c.h.dead[&c.sock].written, b"abc");
    assert!(c.h.dead[&c.sock].linger_zero);

    // A host reset: the guest gets an RST.
    let mut c = connect4();
    c.h.event(c.sock, SockEvent::Error(Errno::ECONNRESET));
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && !f[0].ackf);
    assert_eq!(f[0].seq, c.our);
    assert_eq!(c.h.core.flow_count(), 0);
    assert_eq!(c.h.core.socket_count(), 0);
}

#[test]
fn rst_then_syn_in_one_batch() {
    let mut c = connect4();
    let g = c.g.clone();
    c.h.guest(&[g.clone().seq(c.their).rst(), g.seq(99).syn()]);
    assert!(c.h.closed.contains(&c.sock));
    assert_eq!(
        c.h.core.flow_count(),
        1,
        "new connection on the same 4-tuple"
    );
    assert_eq!(c.h.core.tcp_stats().opened, 2);
}

#[test]
fn hangup_in_handshake_resets() {
    let mut h = H::new(capture_config());
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 2).seq(1).syn()]);
    let s = h.only_sock();
    h.event(s, SockEvent::HangUp);
    assert!(h.take_frames()[0].rst);
    assert_eq!(h.core.flow_count(), 0);
}

#[test]
fn idle_timeout() {
    let mut c = connect4();
    c.h.run_for(7_000_000);
    assert_eq!(c.h.core.flow_count(), 1);
    c.h.run_for(300_000);
    assert_eq!(c.h.core.flow_count(), 0);
    assert!(c.h.take_frames().last().unwrap().rst);
}

#[test]
fn syn_timeout_while_connecting() {
    let mut h = H::new(capture_config());
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 2).seq(1).syn()]);
    h.run_for(10_001);
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
    assert!(h.take_frames()[0].rst);
    assert_eq!(h.core.tcp.poll_timeout(), None);
}

// --- limits and hostile input -------------------------------------------------

#[test]
fn full_table_refuses_with_rst() {
    let mut cfg = capture_config();
    cfg.limits.flows = 2;
    let mut h = H::new(cfg);
    for p in 1..=3u16 {
        h.guest(&[G::new(v4(GUEST4), v4(PEER4), p, 80).seq(10).syn()]);
    }
    assert_eq!(h.core.flow_count(), 2);
    assert_eq!(h.core.counters().dropped(DropReason::FlowTableFull), 1);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && f[0].ackf && f[0].ack == 11 && f[0].dport == 3);
}

#[test]
fn non_syn_for_unknown_flow_gets_rst() {
    let mut h = H::new(capture_config());
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 80)
        .seq(10)
        .ack(5)
        .data(b"x")]);
    // RFC 9293 reset generation (upstream passt drops these silently).
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && !f[0].ackf && f[0].seq == 5);
    assert_eq!((f[0].sport, f[0].dport), (80, 1));
    assert!(h.take_actions().is_empty());
    assert_eq!(h.core.counters().dropped(DropReason::TcpNoFlow), 1);
    assert_eq!(h.core.flow_count(), 0);
    // Without ACK: RST|ACK acknowledging the segment (FIN counts one).
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 80)
        .seq(10)
        .data(b"xy")
        .fin()]);
    let f = h.take_frames();
    assert!(f[0].rst && f[0].ackf && f[0].seq == 0 && f[0].ack == 13);
    // Not to bogus endpoints.
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 0).seq(10).ack(5)]);
    h.guest(&[G::new(v4(GUEST4), v4(Ipv4Addr::BROADCAST), 1, 80)
        .seq(10)
        .ack(5)]);
    assert!(h.take_frames().is_empty());
}

#[test]
fn hostile_segments_never_panic() {
    let mut c = connect4();
    let g = c.g.clone();
    // SYN+FIN, ACK beyond what we sent, for new and existing flows.
    c.h.guest(&[
        G::new(v4(GUEST4), v4(PEER4), 9, 80).seq(1).syn().fin(),
        g.clone().seq(c.their).ack(c.our.wrapping_add(100_000)),
        g.clone().seq(c.their).syn().fin(),
    ]);
    assert!(c.h.core.counters().dropped(DropReason::TcpBadSegment) >= 2);
    assert_eq!(c.h.core.flow_count(), 1);
    // Port 0, multicast and broadcast destinations.
    c.h.guest(&[
        G::new(v4(GUEST4), v4(PEER4), 9, 0).seq(1).syn(),
        G::new(v4(GUEST4), v4(Ipv4Addr::new(224, 0, 0, 1)), 9, 80)
            .seq(1)
            .syn(),
        G::new(v4(GUEST4), v4(Ipv4Addr::BROADCAST), 9, 80)
            .seq(1)
            .syn(),
    ]);
    assert_eq!(c.h.core.counters().dropped(DropReason::TcpBadEndpoint), 3);
    assert_eq!(c.h.core.flow_count(), 1);
    // Bad data offsets and option lengths 0 and 1, written by hand.
    let base = G::new(v4(GUEST4), v4(PEER4), 7, 80).seq(1).syn().build();
    let mut frames = Vec::new();
    for (doff, opt) in [
        (4u8, [0u8; 4]),
        (15, [0; 4]),
        (6, [2, 0, 0, 0]),
        (6, [3, 1, 0, 0]),
        (6, [2, 4, 0, 0]),
    ] {
        let mut f = base.clone();
        f.truncate(54);
        f.extend_from_slice(&opt);
        f[14 + 2..14 + 4].copy_from_slice(&(44u16).to_be_bytes());
        f[34 + 12] = doff << 4;
        frames.push(f);
    }
    c.h.guest_raw(&frames);
    // Data with every offset: none may panic, connection survives or resets.
    for s in [0u32, 1, u32::MAX, c.their.wrapping_add(1 << 31)] {
        c.h.guest(&[g.clone().seq(s).ack(c.our).data(b"zz").fin()]);
    }
    c.h.run_for(10);
}

#[test]
fn flows_and_sockets_return_to_zero() {
    let mut h = H::new(capture_config());
    for p in 1..=20u16 {
        h.guest(&[G::new(v4(GUEST4), v4(PEER4), p, 80).seq(1).syn()]);
    }
    assert_eq!(h.core.flow_count(), 20);
    assert_eq!(h.core.socket_count(), 20);
    let socks: Vec<SockId> = h.socks.keys().copied().collect();
    for (i, s) in socks.iter().enumerate() {
        if i % 2 == 0 {
            h.event(*s, SockEvent::Connected(Err(Errno::ECONNREFUSED)));
        }
    }
    h.core.handle_tap_reset(h.now);
    h.drain(&[]);
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
    assert!(h.socks.is_empty());
    // Ids of freed flows are reused with a new generation: stale events are
    // ignored.
    h.event(socks[1], SockEvent::Readable);
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 80).seq(1).syn()]);
    let s = h.only_sock();
    assert!(!socks.contains(&s) || s != socks[0]);
}

#[test]
fn isn_depends_on_tuple_and_time() {
    let h = H::new(capture_config());
    let k = FlowKey {
        proto: 6,
        src: v4(GUEST4),
        dst: v4(PEER4),
        sport: 1,
        dport: 2,
    };
    let mut k2 = k;
    k2.sport = 3;
    let a = isn(h.core.config(), &k, Instant::ZERO);
    assert_ne!(a, isn(h.core.config(), &k2, Instant::ZERO));
    assert_eq!(
        isn(h.core.config(), &k, Instant::from_nanos(64)),
        a.wrapping_add(2)
    );
}

#[test]
fn interest_edge_triggered_throughout() {
    let mut c = connect(capture_config(), v4(GUEST4), v4(PEER4), Some(0));
    // One edge-triggered mask from the start: it does not change with the
    // data in flight, nor at the end.
    let edge = Interest {
        readable: true,
        writable: true,
        read_hangup: true,
        edge: true,
    };
    assert_eq!(c.h.sock(c.sock).interest, Some(edge));
    // The guest's window (256 << 0... unscaled 3000) fills up.
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).win(3000)]);
    c.h.sock(c.sock).rx = vec![1u8; 5000];
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 3);
    let i = c.h.sock(c.sock).interest.unwrap();
    assert!(i.edge && i.readable);
    // The guest acknowledges: more data goes out, still edge-triggered
    // (peeked data stays queued until acknowledged).
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their)
        .ack(c.our.wrapping_add(3000))
        .win(3000)]);
    let i = c.h.sock(c.sock).interest.unwrap();
    assert!(i.edge && i.readable);
    let sent: usize = c.h.take_frames().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 2000);
    // All acknowledged, nothing to send: the same mask.
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their)
        .ack(c.our.wrapping_add(5000))
        .win(3000)]);
    assert_eq!(c.h.sock(c.sock).interest, Some(edge));
    // After our FIN: edge-triggered, nothing to read.
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their)
        .ack(c.our.wrapping_add(5000))
        .win(3000)]);
    c.h.sock(c.sock).eof = true;
    c.h.event(c.sock, SockEvent::ReadHangUp);
    assert!(c.h.take_frames()[0].fin);
    assert_eq!(c.h.sock(c.sock).interest, Some(edge));
}

#[test]
fn retransmit_with_peek_offset_rewinds_offset() {
    let mut cfg = capture_config();
    cfg.peek_offset = true;
    let mut c = connect(cfg, v4(GUEST4), v4(PEER4), Some(7));
    let acts = c.h.take_actions();
    let _ = acts;
    c.h.sock(c.sock).rx = (0..3000u32).map(|i| i as u8).collect();
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 3);
    assert_eq!(c.h.sock(c.sock).peek_off, Some(3000));
    // The guest got the first segment only.
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our.wrapping_add(1460))]);
    assert_eq!(c.h.sock(c.sock).peek_off, Some(1540));
    c.h.run_for(2100);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].seq, c.our.wrapping_add(1460));
    assert_eq!(f[0].payload[0], (1460u32 % 256) as u8);
    assert_eq!(c.h.sock(c.sock).peek_off, Some(1540));
}

#[test]
fn low_rtt_peer_gets_immediate_acks() {
    let mut c = connect4();
    c.h.sock(c.sock).min_rtt_us = 5;
    c.h.report_info(c.sock);
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(b"abc")]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, c.their.wrapping_add(3));
}

#[test]
fn inbound_v6_full_exchange() {
    let peer = SocketAddr::new("2001:db8::9".parse().unwrap(), 4444);
    let (mut h, sock, syn) = inbound(peer);
    assert_eq!(syn.src, "2001:db8::9".parse::<IpAddr>().unwrap());
    let g = G::new(syn.dst, syn.src, 80, 4444).win(20000);
    let our = syn.seq.wrapping_add(1);
    // No window scale from the guest: scaling is off both ways.
    h.guest(&[g.clone().seq(50).ack(our).syn()]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    h.guest(&[g.clone().seq(51).ack(our).data(b"GET /")]);
    assert_eq!(h.sock(sock).written, b"GET /");
    h.run_for(10);
    let f = h.take_frames();
    assert_eq!(f.last().unwrap().ack, 56);
    assert_eq!(u32::from(f.last().unwrap().win), 65535);
    h.sock(sock).rx = vec![3u8; 30000];
    h.event(sock, SockEvent::Readable);
    let sent: usize = h.take_frames().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 20000, "unscaled guest window");
}

// --- randomised end-to-end ------------------------------------------------------

/// An established connection from a host peer (192.0.2.80:40000 connecting to
/// the forwarded port, target port 80 in the guest). `g` is the guest's side,
/// so its segments go from port 80 to 40000.
fn accept_conn(cfg: Config, sndbuf: u32) -> Conn {
    let mut h = H::new(cfg);
    h.sndbuf = sndbuf;
    h.core.start(h.now);
    h.drain(&[]);
    h.take_actions();
    let lst = SockId(LISTENER_BIT);
    h.event(lst, SockEvent::Readable);
    let Some(Action::Accept { sock, .. }) = h.take_actions().first().copied() else {
        panic!()
    };
    h.socks.insert(
        sock,
        FakeSock {
            kind: Some(SockKind::TcpStream),
            sndbuf,
            ..FakeSock::default()
        },
    );
    let peer = SocketAddr::new(v4(PEER4), 40000);
    h.event(sock, SockEvent::Accepted(Ok((peer, peer))));
    let syn = h.take_frames().pop().unwrap();
    assert!(syn.syn);
    let g = G::new(v4(GUEST4), v4(PEER4), 80, 40000);
    h.guest(&[g
        .clone()
        .seq(GISN)
        .ack(syn.seq.wrapping_add(1))
        .syn()
        .opts(vec![
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::WindowScale(7),
        ])]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    h.take_actions();
    // The connection's flow lives on: its port pair is reversed from `connect`.
    Conn {
        h,
        sock,
        g,
        our: syn.seq.wrapping_add(1),
        their: GISN.wrapping_add(1),
    }
}

struct Xs(u64);
impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Both byte streams arrive intact and in order through guest-link loss,
/// reordering, frames the link did not accept, partial writes and EAGAIN,
/// with and without SO_PEEK_OFF; then both sides close and the connection
/// and its socket go away.
fn streams_survive(seed: u64, peek_offset: bool, sndbuf: u32, inbound: bool) {
    let mut r = Xs(seed | 1);
    let mut cfg = if inbound {
        inbound_cfg()
    } else {
        capture_config()
    };
    cfg.peek_offset = peek_offset;
    let mut c = if inbound {
        accept_conn(cfg, sndbuf)
    } else {
        connect_sndbuf(cfg, v4(GUEST4), v4(PEER4), Some(7), sndbuf)
    };
    let up: Vec<u8> = (0..30_000u32).map(|i| (i * 31 + 7) as u8).collect();
    let down: Vec<u8> = (0..30_000u32).map(|i| (i * 13 + 1) as u8).collect();
    let up_len = up.len() as u32;
    let mut down_fed = 0usize;
    // Guest sender state (offsets from its first data byte; FIN at up_len).
    let (g_isn, mut g_una, mut g_nxt) = (c.their, 0u32, 0u32);
    let mut peer_wnd: u32 = 65535 << MAX_WS;
    let mut stuck = 0;
    // Guest receiver state.
    let mut got: Vec<u8> = Vec::new();
    let mut got_fin = false;
    let guest_win: u16 = 400; // << 7 = 51200 bytes
    c.h.core.handle_tap_sent(c.h.now, 0);
    let written = |h: &H| -> Vec<u8> {
        h.socks
            .get(&c.sock)
            .or_else(|| h.dead.get(&c.sock))
            .map(|s| s.written.clone())
            .unwrap_or_default()
    };
    for step in 0..5000 {
        let lossy = step < 2500;
        let open = c.h.socks.contains_key(&c.sock);
        // Host side: the peer sends a little more, and reads some of what
        // we wrote.
        if open && down_fed < down.len() && r.chance(30) {
            let n = (r.below(5000) as usize + 1).min(down.len() - down_fed);
            c.h.sock(c.sock)
                .rx
                .extend_from_slice(&down[down_fed..down_fed + n]);
            down_fed += n;
            if down_fed == down.len() {
                c.h.sock(c.sock).eof = true;
                // The kernel reports the end of stream (EPOLLRDHUP).
                c.h.event(c.sock, SockEvent::ReadHangUp);
            }
        }
        if open && r.chance(40) {
            let s = c.h.sock(c.sock);
            s.outq = s.outq.saturating_sub(r.below(20_000) as u32);
            s.send_room = if lossy && r.chance(20) {
                Some(r.below(3000) as usize)
            } else {
                None
            };
            c.h.event(c.sock, SockEvent::Writable);
        }
        if c.h.socks.contains_key(&c.sock) {
            c.h.event(c.sock, SockEvent::Readable);
        }
        // Guest link: some frames not accepted, some lost after that.
        let out = c.h.take_frames();
        let accepted = if lossy && r.chance(10) {
            r.below(out.len() as u64 + 1) as usize
        } else {
            out.len()
        };
        c.h.core.handle_tap_sent(c.h.now, accepted);
        c.h.drain(&[]);
        let mut need_ack = false;
        if let Some(s) = c.h.socks.get(&c.sock) {
            // Free space only grew since these frames were made: every window
            // offered must still fit.
            let free = s.sndbuf - s.outq;
            for o in &out {
                let w = u32::from(o.win) << MAX_WS;
                assert!(w <= free, "window {w} above free space {free}");
            }
        }
        for o in &out[..accepted] {
            if lossy && r.chance(5) {
                continue;
            }
            if o.rst {
                // Only for segments after the connection was closed (our
                // ACK of the guest's FIN was lost, say): the guest is done.
                assert_eq!(c.h.core.flow_count(), 0, "connection reset at step {step}");
                g_una = up_len + 1;
                continue;
            }
            assert!(!o.syn);
            // Sender side: our ACK and window.
            let acked = o.ack.wrapping_sub(g_isn);
            assert!(
                acked as usize <= written(&c.h).len() + 1,
                "ACK of data never written"
            );
            if seq::gt(acked, g_una) {
                g_una = acked;
                stuck = 0;
            }
            peer_wnd = u32::from(o.win) << MAX_WS;
            // Receiver side.
            let off = o.seq.wrapping_sub(c.our);
            if !o.payload.is_empty() || o.fin {
                need_ack = true;
            }
            if off as usize == got.len() && !got_fin {
                got.extend_from_slice(&o.payload);
                if o.fin {
                    assert_eq!(got.len(), down.len(), "FIN before all data");
                    got_fin = true;
                }
            }
        }
        assert!(got[..] == down[..got.len()], "guest stream corrupted");
        let w = written(&c.h);
        assert!(w[..] == up[..w.len()], "host stream corrupted");
        if !c.h.socks.contains_key(&c.sock) && got_fin && g_una == up_len + 1 {
            break;
        }
        // Guest sends data within our window, possibly lossy and reordered,
        // and its FIN after the last byte.
        stuck += 1;
        if stuck > 30 {
            g_nxt = g_una; // retransmission timeout
            stuck = 0;
        }
        if seq::lt(g_nxt, g_una) {
            g_nxt = g_una;
        }
        let mut segs = Vec::new();
        let ack = c.our.wrapping_add(got.len() as u32 + u32::from(got_fin));
        for _ in 0..r.below(6) {
            let limit = g_una.wrapping_add(peer_wnd).min(up_len);
            let fin_due = g_nxt == up_len && g_una <= up_len;
            if !seq::lt(g_nxt, limit) && !fin_due {
                break;
            }
            let len = if fin_due {
                0
            } else {
                (r.below(1460) as u32 + 1).min(limit - g_nxt)
            };
            let mut seg =
                c.g.clone()
                    .seq(g_isn.wrapping_add(g_nxt))
                    .ack(ack)
                    .win(guest_win)
                    .data(&up[g_nxt as usize..(g_nxt + len) as usize]);
            g_nxt += len;
            if g_nxt == up_len {
                seg = seg.fin();
                g_nxt += 1;
            }
            if !(lossy && r.chance(5)) {
                segs.push(seg);
            }
            if g_nxt > up_len {
                break;
            }
        }
        if lossy && segs.len() > 1 && r.chance(20) {
            segs.swap(0, 1);
        }
        if segs.is_empty() && peer_wnd == 0 && g_nxt < up_len && stuck % 8 == 7 {
            // Zero-window probe, as Linux sends it: one before the next byte.
            segs.push(
                c.g.clone()
                    .seq(g_isn.wrapping_add(g_una).wrapping_sub(1))
                    .ack(ack)
                    .win(guest_win),
            );
        }
        if segs.is_empty() && (need_ack || r.chance(10)) {
            let seqno = g_isn.wrapping_add(g_nxt.min(up_len + u32::from(g_una > up_len)));
            segs.push(c.g.clone().seq(seqno).ack(ack).win(guest_win));
        }
        if !segs.is_empty() {
            c.h.guest(&segs);
        }
        let dt = r.below(40) + 1;
        c.h.run_for(dt);
    }
    let w = written(&c.h);
    assert!(
        w == up,
        "guest → host incomplete: {} of {}",
        w.len(),
        up.len()
    );
    assert!(
        got == down,
        "host → guest incomplete: {} of {}",
        got.len(),
        down.len()
    );
    assert!(got_fin, "no FIN from the host side");
    assert!(
        c.h.dead.get(&c.sock).is_some_and(|s| s.shut_wr),
        "no shutdown"
    );
    assert_eq!(c.h.core.flow_count(), 0);
    assert_eq!(
        c.h.core.socket_count(),
        usize::from(inbound),
        "only the listener"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    #[test]
    fn streams_survive_faults(seed in proptest::prelude::any::<u64>(), peek in proptest::prelude::any::<bool>(), small in proptest::prelude::any::<bool>(), inbound in proptest::prelude::any::<bool>()) {
        streams_survive(seed, peek, if small { 8192 } else { 1 << 20 }, inbound);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Arbitrary segments (any flags, numbers, windows, raw options) on an
    /// open connection and on new 4-tuples, mixed with socket events: no
    /// panic, and the tables stay consistent.
    #[test]
    fn arbitrary_segments_never_panic(
        segs in proptest::collection::vec(
            (proptest::prelude::any::<(u32, u32, u8, u16, u8)>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12), 0usize..40),
            1..40),
        events in proptest::collection::vec(0u8..8, 0..20),
    ) {
        let mut c = connect4();
        c.h.sock(c.sock).rx = vec![1; 5000];
        let mut frames = Vec::new();
        for ((seq, ack, flags, win, sport), opts, plen) in segs {
            let mut f = G::new(v4(GUEST4), v4(PEER4), if sport % 2 == 0 { 40000 } else { u16::from(sport) }, 80)
                .seq(seq)
                .win(win)
                .data(&vec![0x5a; plen])
                .build();
            // Raw flags and options, with a matching data offset when they fit.
            f[34 + 13] = flags & 0x3f;
            f[34 + 8..34 + 12].copy_from_slice(&ack.to_be_bytes());
            let mut g = f[..54].to_vec();
            let olen = opts.len() & !3;
            g.extend_from_slice(&opts[..olen]);
            g.extend_from_slice(&f[54..]);
            g[34 + 12] = (((20 + olen) / 4) as u8) << 4;
            let total = (g.len() - 14) as u16;
            g[16..18].copy_from_slice(&total.to_be_bytes());
            // The IP checksum is not checked by the core; the TCP one is not either.
            frames.push(g);
        }
        c.h.guest_raw(&frames);
        for e in events {
            let ev = match e {
                0 => SockEvent::Readable,
                1 => SockEvent::Writable,
                2 => SockEvent::ReadHangUp,
                3 => SockEvent::HangUp,
                4 => SockEvent::Sent(Ok(3)),
                5 => SockEvent::TcpInfo(TcpInfo::default()),
                6 => SockEvent::Connected(Ok(())),
                _ => SockEvent::Error(Errno::ECONNRESET),
            };
            if c.h.socks.contains_key(&c.sock) {
                c.h.event(c.sock, ev);
            }
            c.h.run_for(500);
        }
        c.h.core.handle_tap_reset(c.h.now);
        c.h.drain(&[]);
        proptest::prop_assert_eq!(c.h.core.flow_count(), 0);
        proptest::prop_assert_eq!(c.h.core.socket_count(), 0);
    }
}

#[test]
fn syn_on_open_connection_gets_challenge_ack() {
    let mut c = connect4();
    c.h.guest(&[c.g.clone().seq(12345).syn()]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].ackf && !f[0].syn && !f[0].rst);
    assert_eq!(f[0].ack, c.their);
    // The guest resets the stale connection and connects again.
    c.h.guest(&[c.g.clone().seq(c.their).rst(), c.g.clone().seq(12345).syn()]);
    assert!(c.h.closed.contains(&c.sock));
    assert_eq!(c.h.core.flow_count(), 1);
}

#[test]
fn inbound_with_full_table_is_accepted_and_closed() {
    let mut cfg = inbound_cfg();
    cfg.limits.flows = 1;
    let mut h = H::new(cfg);
    h.core.start(h.now);
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 80).seq(1).syn()]);
    assert_eq!(h.core.flow_count(), 1);
    let lst = SockId(LISTENER_BIT);
    h.take_actions();
    h.event(lst, SockEvent::Readable);
    let acts = h.take_actions();
    let reject = SockId(LISTENER_BIT | REJECT_IDX);
    assert_eq!(
        acts,
        vec![Action::Accept {
            listener: lst,
            sock: reject
        }]
    );
    let peer = SocketAddr::new(v4(PEER4), 1234);
    h.event(reject, SockEvent::Accepted(Ok((peer, peer))));
    assert_eq!(h.take_actions(), vec![Action::Close { sock: reject }]);
    assert_eq!(h.core.counters().dropped(DropReason::FlowTableFull), 1);
    assert_eq!(
        h.core.socket_count(),
        2,
        "listener and the first connection"
    );
}

#[test]
fn flow_split_over_two_groups_of_one_batch() {
    // 129 distinct flows in one batch force the grouper to hand over its
    // groups early: the connection's second segment lands in a second group
    // while the Send of the first is still queued.
    let mut c = connect4();
    let mut segs = vec![c.g.clone().seq(c.their).ack(c.our).data(b"first")];
    for p in 1..=128u16 {
        segs.push(G::new(v4(GUEST4), v4(PEER4), p, 9).seq(1).syn());
    }
    segs.push(
        c.g.clone()
            .seq(c.their.wrapping_add(5))
            .ack(c.our)
            .data(b"second"),
    );
    c.h.guest(&segs);
    // The second group joins the Send of the first, still queued: one
    // write, nothing left to retransmission.
    let sends =
        c.h.take_actions()
            .iter()
            .filter(|a| matches!(a, Action::Send { sock, .. } if *sock == c.sock))
            .count();
    assert_eq!(sends, 1);
    assert_eq!(c.h.sock(c.sock).written, b"firstsecond");
    c.h.run_for(10);
    let acks: Vec<u32> =
        c.h.take_frames()
            .iter()
            .filter(|o| o.dport == 40000)
            .map(|o| o.ack)
            .collect();
    assert_eq!(acks, vec![c.their.wrapping_add(11)]);

    // A partial write of the joined Send acknowledges only what was taken;
    // the guest retransmits the rest and the stream stays whole.
    let their = c.their.wrapping_add(11);
    c.h.sock(c.sock).send_room = Some(3);
    let mut segs = vec![c.g.clone().seq(their).ack(c.our).data(b"abcd")];
    for p in 1..=128u16 {
        segs.push(G::new(v4(GUEST4), v4(PEER4), p, 9).seq(1).syn());
    }
    segs.push(
        c.g.clone()
            .seq(their.wrapping_add(4))
            .ack(c.our)
            .data(b"efgh"),
    );
    c.h.guest(&segs);
    assert_eq!(c.h.sock(c.sock).written, b"firstsecondabc");
    c.h.sock(c.sock).send_room = None;
    c.h.sock(c.sock).outq = 0;
    c.h.event(c.sock, SockEvent::Writable);
    c.h.guest(&[c
        .g
        .clone()
        .seq(their.wrapping_add(3))
        .ack(c.our)
        .data(b"defgh")]);
    assert_eq!(c.h.sock(c.sock).written, b"firstsecondabcdefgh");
}

#[test]
fn peek_overtaken_by_rewind_is_discarded() {
    for peek_offset in [false, true] {
        let mut cfg = capture_config();
        cfg.peek_offset = peek_offset;
        let mut c = connect(cfg, v4(GUEST4), v4(PEER4), Some(0));
        let data: Vec<u8> = (0..8000u32).map(|i| (i / 3) as u8).collect();
        c.h.sock(c.sock).rx = data[..4380].to_vec();
        c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).win(8000)]);
        c.h.event(c.sock, SockEvent::Readable);
        assert_eq!(c.h.take_frames().len(), 3);
        c.h.sock(c.sock).rx.extend_from_slice(&data[4380..]);
        // One batch: an ACK (asks for a Peek), then, in a second group, two
        // duplicate ACKs (fast retransmission rewinds before the Peek runs).
        let ack =
            c.g.clone()
                .seq(c.their)
                .ack(c.our.wrapping_add(1460))
                .win(8000);
        let mut segs = vec![ack.clone()];
        for p in 1..=128u16 {
            segs.push(G::new(v4(GUEST4), v4(PEER4), p, 9).seq(1).syn());
        }
        segs.push(ack.clone());
        segs.push(ack);
        c.h.guest(&segs);
        let f: Vec<Out> =
            c.h.take_frames()
                .into_iter()
                .filter(|o| o.dport == 40000)
                .collect();
        assert!(!f.is_empty());
        assert_eq!(
            f[0].seq,
            c.our.wrapping_add(1460),
            "peek_offset {peek_offset}"
        );
        for o in &f {
            let off = o.seq.wrapping_sub(c.our) as usize;
            assert_eq!(&o.payload[..], &data[off..off + o.payload.len()]);
        }
    }
}

#[test]
fn probe_of_closed_window_gets_fresh_window() {
    let mut c = connect(capture_config(), v4(GUEST4), v4(PEER4), Some(0));
    c.h.sock(c.sock).sndbuf = 4096;
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(&[1; 4096])]);
    c.h.run_for(10);
    let f = c.h.take_frames();
    assert_eq!(f.last().unwrap().win, 0, "window closed");
    // The socket drains without an event reaching us; the guest probes.
    c.h.sock(c.sock).outq = 0;
    let next = c.their.wrapping_add(4096);
    c.h.guest(&[c.g.clone().seq(next.wrapping_sub(1)).ack(c.our)]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, next);
    assert_eq!(u32::from(f[0].win) << MAX_WS, 4096 - 256);
}

#[test]
fn low_rtt_peers_are_remembered() {
    let mut c = connect4();
    c.h.sock(c.sock).min_rtt_us = 3;
    c.h.report_info(c.sock);
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(b"x")]);
    assert_eq!(c.h.take_frames().len(), 1, "immediate ACK");
    // A new connection to the same peer ACKs at once from the start.
    let mut h = c.h;
    let g = G::new(v4(GUEST4), v4(PEER4), 40001, 80);
    h.guest(&[g.clone().seq(1).syn()]);
    let s2 = *h
        .socks
        .keys()
        .find(|&&s| s != c.sock && h.socks[&s].kind == Some(SockKind::TcpStream))
        .unwrap();
    h.event(s2, SockEvent::Connected(Ok(())));
    let our = h.take_frames()[0].seq.wrapping_add(1);
    h.guest(&[g.clone().seq(2).ack(our), g.seq(2).ack(our).data(b"y")]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, 3);
}

#[test]
fn closed_window_is_polled_without_writable() {
    let mut c = connect(capture_config(), v4(GUEST4), v4(PEER4), Some(0));
    c.h.sock(c.sock).sndbuf = 4096;
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(&[1; 4096])]);
    c.h.run_for(10);
    assert_eq!(c.h.take_frames().last().unwrap().win, 0);
    // The socket drains but no EPOLLOUT is reported: the window reopens
    // within one poll interval anyway.
    c.h.sock(c.sock).outq = 0;
    c.h.run_for(WINDOW_POLL.as_millis() as u64 + 1);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(u32::from(f[0].win) << MAX_WS, 4096 - 256);
    // Once open, no more polling.
    c.h.take_actions();
    c.h.run_for(1000);
    assert!(!c
        .h
        .take_actions()
        .contains(&Action::QuerySendSpace { sock: c.sock }));
}

#[test]
fn fin_not_accepted_by_link_is_sent_again() {
    let mut c = connect4();
    c.h.core.handle_tap_sent(c.h.now, 0);
    c.h.sock(c.sock).rx = b"last".to_vec();
    c.h.sock(c.sock).eof = true;
    c.h.event(c.sock, SockEvent::ReadHangUp);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 2, "data, then FIN");
    assert!(f[1].fin);
    // Only the data frame made it.
    c.h.core.handle_tap_sent(c.h.now, 1);
    c.h.drain(&[]);
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].fin);
    assert_eq!(f[0].seq, c.our.wrapping_add(4));
}

#[test]
fn listeners_from_forwarding_table() {
    let mut cfg = capture_config();
    // -t 8080:80 -t 192.0.2.1/9000-9001
    cfg.forwards = vec![
        Forward::new(Proto::Tcp, 8080, 80),
        Forward {
            addr: Some("192.0.2.1".parse().unwrap()),
            last: 9001,
            ..Forward::new(Proto::Tcp, 9000, 9000)
        },
    ];
    let mut h = H::new(cfg);
    h.core.start(h.now);
    h.drain(&[]);
    let binds: Vec<SocketAddr> = h
        .take_actions()
        .iter()
        .filter_map(|a| match a {
            Action::Bind { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect();
    assert_eq!(
        binds,
        vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080),
            SocketAddr::new("192.0.2.1".parse().unwrap(), 9000),
            SocketAddr::new("192.0.2.1".parse().unwrap(), 9001),
        ]
    );
    assert_eq!(h.core.socket_count(), 3);
    // A connection on 8080 reaches the guest on port 80.
    let lst = SockId(LISTENER_BIT);
    h.event(lst, SockEvent::Readable);
    let Some(Action::Accept { sock, .. }) = h.take_actions().first().copied() else {
        panic!()
    };
    h.socks.insert(
        sock,
        FakeSock {
            kind: Some(SockKind::TcpStream),
            sndbuf: 1 << 20,
            ..FakeSock::default()
        },
    );
    let peer = SocketAddr::new(v4(PEER4), 7777);
    h.event(sock, SockEvent::Accepted(Ok((peer, peer))));
    let f = h.take_frames();
    assert_eq!((f[0].sport, f[0].dport), (7777, 80));
}

// --- TCP_MAXSEG, run-time listeners ----------------------------------------------

#[test]
fn maxseg_option_clamped_to_what_linux_accepts() {
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 80);
    h.guest(&[g
        .seq(1)
        .syn()
        .opts(vec![TcpOptionElement::MaximumSegmentSize(65000)])]);
    let sock = h.only_sock();
    assert_eq!(h.sock(sock).mss, Some(32767));
}

fn binds_and_closes(h: &mut H) -> (Vec<(SockId, SocketAddr)>, Vec<SockId>) {
    let acts = h.take_actions();
    let binds = acts
        .iter()
        .filter_map(|a| match a {
            Action::Bind { sock, addr, .. } => Some((*sock, *addr)),
            _ => None,
        })
        .collect();
    let closes = acts
        .iter()
        .filter_map(|a| match a {
            Action::Close { sock } => Some(*sock),
            _ => None,
        })
        .collect();
    (binds, closes)
}

#[test]
fn tcp_forwards_replaced_at_run_time() {
    let fwd = |port, target_port| Forward::new(Proto::Tcp, port, target_port);
    let mut cfg = capture_config();
    cfg.forwards = vec![fwd(8080, 80)];
    let mut h = H::new(cfg);
    h.core.start(h.now);
    h.drain(&[]);
    let (b, _) = binds_and_closes(&mut h);
    assert_eq!(b.len(), 1);
    let l8080 = b[0].0;
    // A connection through 8080.
    h.event(l8080, SockEvent::Readable);
    let Some(Action::Accept { sock, .. }) = h.take_actions().first().copied() else {
        panic!()
    };
    h.socks.insert(
        sock,
        FakeSock {
            kind: Some(SockKind::TcpStream),
            sndbuf: 1 << 20,
            ..FakeSock::default()
        },
    );
    let peer = SocketAddr::new(v4(PEER4), 7777);
    h.event(sock, SockEvent::Accepted(Ok((peer, peer))));
    assert!(h.take_frames()[0].syn);
    assert_eq!(h.core.socket_count(), 2);

    // Add 9000: only it is opened.
    h.core.set_forwards(h.now, &[fwd(8080, 80), fwd(9000, 90)]);
    h.drain(&[]);
    let (b, c) = binds_and_closes(&mut h);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1.port(), 9000);
    assert!(c.is_empty());
    let l9000 = b[0].0;
    assert_eq!(h.core.socket_count(), 3);

    // Drop 8080, retarget 9000: the connection stays.
    h.core.set_forwards(h.now, &[fwd(9000, 91)]);
    h.drain(&[]);
    let (b, c) = binds_and_closes(&mut h);
    assert!(b.is_empty());
    assert_eq!(c, vec![l8080]);
    assert_eq!(h.core.flow_count(), 1);
    assert!(!h.closed.contains(&sock));
    assert_eq!(h.core.socket_count(), 2);
    h.event(l9000, SockEvent::Readable);
    let Some(Action::Accept { sock: s2, .. }) = h.take_actions().first().copied() else {
        panic!()
    };
    h.socks.insert(
        s2,
        FakeSock {
            kind: Some(SockKind::TcpStream),
            sndbuf: 1 << 20,
            ..FakeSock::default()
        },
    );
    h.event(s2, SockEvent::Accepted(Ok((peer, peer))));
    assert_eq!(h.take_frames()[0].dport, 91, "the new target port");

    // A new forward fails to open: reported, counted, out of socket_count.
    h.core.set_forwards(h.now, &[fwd(9000, 91), fwd(22, 22)]);
    h.drain(&[]);
    let (b, _) = binds_and_closes(&mut h);
    assert_eq!(b.len(), 1);
    assert_eq!(h.core.failed_forwards().count(), 0);
    h.event(b[0].0, SockEvent::OpenFailed(Errno::EACCES));
    assert_eq!(
        h.core
            .failed_forwards()
            .map(|f| (f.forward, f.error))
            .collect::<Vec<_>>(),
        vec![(fwd(22, 22), Some(Errno::EACCES))]
    );
    assert_eq!(h.core.listen_stats().failures, 1);
    assert_eq!(h.core.socket_count(), 3);
    // Unlisting it clears the report; the same set again changes nothing.
    h.core.set_forwards(h.now, &[fwd(9000, 91)]);
    h.drain(&[]);
    assert_eq!(h.core.failed_forwards().count(), 0);
    h.core.set_forwards(h.now, &[fwd(9000, 91), fwd(9000, 91)]);
    h.drain(&[]);
    let (b, c) = binds_and_closes(&mut h);
    assert!(b.is_empty() && c.is_empty());
    assert_eq!(h.core.socket_count(), 3);
}

// --- closing after the guest's FIN, resets for freed flows, lost handshake ACK ---

#[test]
fn guest_fin_first_keeps_flow_until_our_fin_is_acked() {
    let mut c = connect4();
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(b"bye").fin()]);
    assert!(c.h.sock(c.sock).shut_wr);
    c.h.take_frames();
    let their = c.their.wrapping_add(4);
    // The host answers and closes: data, end of stream, hang-up.
    c.h.sock(c.sock).rx = b"more".to_vec();
    c.h.sock(c.sock).eof = true;
    c.h.event(c.sock, SockEvent::ReadHangUp);
    c.h.event(c.sock, SockEvent::HangUp);
    let f = c.h.take_frames();
    assert_eq!(f[0].payload, b"more");
    assert!(f.last().unwrap().fin);
    // Both were lost on the link. The socket stays (closing it with unread
    // data would reset the host peer) and so does the flow.
    assert!(
        !c.h.closed.contains(&c.sock),
        "socket closed before our FIN was acked"
    );
    assert_eq!(c.h.core.flow_count(), 1);
    c.h.run_for(2100);
    let f = c.h.take_frames();
    assert_eq!(f[0].payload, b"more");
    assert_eq!(f[0].seq, c.our);
    let fin = f.last().unwrap();
    assert!(fin.fin);
    assert_eq!(fin.seq, c.our.wrapping_add(4));
    // The guest acknowledges everything: now the socket closes.
    c.h.guest(&[c.g.clone().seq(their).ack(c.our.wrapping_add(5))]);
    assert!(c.h.closed.contains(&c.sock));
    assert_eq!(c.h.core.flow_count(), 0);
    assert_eq!(c.h.core.socket_count(), 0);
    assert_eq!(c.h.core.counters().dropped(DropReason::TcpNoFlow), 0);
    assert!(c.h.take_frames().is_empty());
}

#[test]
fn guest_fin_first_unacked_fin_times_out() {
    let mut c = connect4();
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).fin()]);
    c.h.sock(c.sock).eof = true;
    c.h.event(c.sock, SockEvent::ReadHangUp);
    c.h.event(c.sock, SockEvent::HangUp);
    assert!(c.h.take_frames().last().unwrap().fin);
    assert_eq!(c.h.core.flow_count(), 1);
    // Our FIN is sent again until the retransmissions run out, then reset.
    c.h.run_for(20_000);
    assert!(c.h.take_frames().iter().filter(|o| o.fin).count() >= 3);
    assert_eq!(c.h.core.flow_count(), 1);
    c.h.run_for(300_000);
    let f = c.h.take_frames();
    assert!(f.last().unwrap().rst);
    assert_eq!(c.h.core.flow_count(), 0);
    assert_eq!(c.h.core.socket_count(), 0);
}

#[test]
fn segment_for_freed_flow_gets_rst() {
    let mut c = connect4();
    c.h.event(c.sock, SockEvent::Error(Errno::ECONNRESET));
    assert!(c.h.take_frames()[0].rst);
    assert_eq!(c.h.core.flow_count(), 0);
    c.h.take_actions();
    // The guest missed the reset and sends again.
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(b"again")]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && !f[0].ackf);
    assert_eq!(f[0].seq, c.our);
    assert_eq!((f[0].sport, f[0].dport), (80, 40000));
    assert_eq!(c.h.core.flow_count(), 0);
    assert!(c.h.take_actions().is_empty());
    // A reset is never answered.
    c.h.guest(&[c.g.clone().seq(c.their).rst()]);
    assert!(c.h.take_frames().is_empty());
    assert_eq!(c.h.core.tcp_stats().no_flow_resets, 1);
}

#[test]
fn lost_handshake_ack_recovered_by_syn_ack_again() {
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 25);
    h.guest(&[g.clone().seq(1000).syn()]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Ok(())));
    let sa = h.take_frames()[0].clone();
    assert!(sa.syn && sa.ackf);
    // The guest's ACK is lost; it waits for the server's banner.
    h.sock(sock).rx = b"220 hello\r\n".to_vec();
    h.event(sock, SockEvent::Readable);
    assert!(h.take_frames().is_empty());
    h.run_for(1100);
    let f = h.take_frames();
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].syn && f[0].ackf);
    assert_eq!((f[0].seq, f[0].ack), (sa.seq, 1001));
    // The guest answers the repeated SYN-ACK with its ACK: the banner flows.
    h.guest(&[g.clone().seq(1001).ack(sa.seq.wrapping_add(1))]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload, b"220 hello\r\n");
    // A retransmitted SYN is answered with the SYN-ACK as well.
    let mut h = H::new(capture_config());
    h.guest(&[g.clone().seq(1000).syn()]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Ok(())));
    let sa = h.take_frames()[0].clone();
    h.guest(&[g.clone().seq(1000).syn()]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].syn && f[0].ackf && f[0].seq == sa.seq);
    // Established: no more SYN-ACKs, no reset at the handshake timeout.
    h.guest(&[g.seq(1001).ack(sa.seq.wrapping_add(1))]);
    h.run_for(15_000);
    assert!(h.take_frames().is_empty());
    assert_eq!(h.core.flow_count(), 1);
}

// --- epoll interest ----------------------------------------------------------------

fn set_interests(h: &mut H) -> usize {
    h.take_actions()
        .iter()
        .filter(|a| matches!(a, Action::SetInterest { .. }))
        .count()
}

#[test]
fn writable_with_full_buffer_changes_no_interest() {
    let mut c = connect_sndbuf(capture_config(), v4(GUEST4), v4(PEER4), Some(7), 8192);
    // The guest fills the send buffer: writable interest.
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(&[3u8; 8192])]);
    let i = c.h.sock(c.sock).interest.unwrap();
    assert!(i.writable && i.edge);
    c.h.take_actions();
    // EPOLLOUT while the buffer still has no room for a segment: nothing changes.
    for _ in 0..3 {
        c.h.event(c.sock, SockEvent::Writable);
        assert_eq!(set_interests(&mut c.h), 0);
    }
    // It drains: the window reopens, and the interest stays as it is
    // (EPOLLOUT is edge-triggered: it costs nothing while the window is
    // open).
    c.h.sock(c.sock).outq = 0;
    c.h.event(c.sock, SockEvent::Writable);
    assert_eq!(set_interests(&mut c.h), 0);
    assert!(c.h.sock(c.sock).interest.unwrap().writable);
    assert!(c.h.take_frames().last().unwrap().win > 0);
}

#[test]
fn bulk_to_guest_settles_on_one_interest() {
    let mut c = connect(capture_config(), v4(GUEST4), v4(PEER4), Some(0));
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).win(4380)]);
    c.h.sock(c.sock).rx = vec![1u8; 100_000];
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 3);
    c.h.take_actions();
    let mut acked = 0u32;
    for _ in 0..10 {
        acked += 1460;
        c.h.guest(&[c
            .g
            .clone()
            .seq(c.their)
            .ack(c.our.wrapping_add(acked))
            .win(4380)]);
        assert_eq!(c.h.take_frames().len(), 1);
        assert_eq!(set_interests(&mut c.h), 0, "interest churn on an ACK");
        c.h.event(c.sock, SockEvent::Readable);
        assert_eq!(set_interests(&mut c.h), 0, "interest churn on Readable");
    }
}

#[test]
fn window_closed_after_partial_write_until_writable() {
    let mut c = connect4();
    c.h.sock(c.sock).send_room = Some(1000);
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(&[1u8; 1460])]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].ack, f[0].win), (c.their.wrapping_add(1000), 0));
    // A probe of the closed window: still closed (TCP_INFO alone does not
    // reopen it).
    c.h.guest(&[c.g.clone().seq(c.their.wrapping_add(999)).ack(c.our)]);
    let f = c.h.take_frames();
    assert_eq!(f.last().unwrap().win, 0);
    // EPOLLOUT: the window opens.
    c.h.sock(c.sock).send_room = None;
    c.h.event(c.sock, SockEvent::Writable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].win > 0);
    // Without EPOLLOUT, the next poll of the closed window reopens it.
    c.h.sock(c.sock).send_room = Some(0);
    c.h.guest(&[c
        .g
        .clone()
        .seq(c.their.wrapping_add(1000))
        .ack(c.our)
        .data(&[2u8; 100])]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1, "closed window announced at once");
    assert_eq!((f[0].ack, f[0].win), (c.their.wrapping_add(1000), 0));
    c.h.sock(c.sock).send_room = None;
    c.h.run_for(150);
    assert!(c.h.take_frames().last().unwrap().win > 0);
}

#[test]
fn half_the_window_used_is_acknowledged_at_once() {
    // A remote peer and a large send buffer: ACKs are normally deferred.
    let mut c = connect_sndbuf(capture_config(), v4(GUEST4), v4(PEER4), Some(7), 200_000);
    let mut their = c.their;
    let small = c.g.clone().seq(their).ack(c.our).data(&[1u8; 1460]);
    their = their.wrapping_add(1460);
    c.h.guest(&[small]);
    assert!(c.h.take_frames().is_empty(), "small write: ACK deferred");
    c.h.run_for(10);
    let f = c.h.take_frames();
    let wnd = u32::from(f[0].win) << 8;
    assert!(wnd > 100_000);
    // More than half of it in one batch: ACK at once.
    let n = (wnd / 2 / 1460 + 1) as usize;
    let segs: Vec<G> = (0..n)
        .map(|i| {
            c.g.clone()
                .seq(their.wrapping_add(i as u32 * 1460))
                .ack(c.our)
                .data(&[2u8; 1460])
        })
        .collect();
    c.h.guest(&segs);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1, "ACK without waiting for the timer");
    assert_eq!(f[0].ack, their.wrapping_add(n as u32 * 1460));
}

#[test]
fn tap_sent_rewinds_past_thousands_of_frames() {
    // More frames between two handle_tap_sent calls than the log has runs
    // for single frames: small segments, one run per peek.
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 80);
    h.guest(&[g.clone().seq(1).syn().opts(vec![
        TcpOptionElement::MaximumSegmentSize(48),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ])]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Ok(())));
    let our = h.take_frames()[0].seq.wrapping_add(1);
    h.guest(&[g.clone().seq(2).ack(our)]);
    h.core.handle_tap_sent(h.now, 0);
    let total = (TX_LOG + 2000) * 48;
    h.sock(sock).rx = (0..total).map(|i| i as u8).collect();
    let mut frames = 0;
    for _ in 0..1000 {
        h.event(sock, SockEvent::Readable);
        let n = h.take_frames().len();
        if n == 0 {
            break;
        }
        frames += n;
    }
    assert_eq!(frames, TX_LOG + 2000);
    // The link took only the first 9000: everything after is sent again.
    h.core.handle_tap_sent(h.now, 9000);
    h.drain(&[]);
    h.event(sock, SockEvent::Readable);
    let f = h.take_frames();
    assert!(!f.is_empty());
    assert_eq!(f[0].seq, our.wrapping_add(9000 * 48));
    assert_eq!(f[0].payload, h.sock(sock).rx[9000 * 48..9001 * 48].to_vec());
}

#[test]
fn tcp_forwards_many_ports_reuse_slots() {
    let fwd = |port: u16| Forward::new(Proto::Tcp, port, port);
    let mut h = H::new(capture_config());
    let a: Vec<Forward> = (1000..6000).map(fwd).collect();
    h.core.set_forwards(h.now, &a);
    for _ in 0..3 {
        h.drain(&[]); // at most 10 000 actions each
    }
    let (b, c) = binds_and_closes(&mut h);
    assert_eq!((b.len(), c.len()), (5000, 0));
    // Shift the range by 1000: 1000 closed, 1000 opened in the freed slots.
    let b2: Vec<Forward> = (2000..7000).map(fwd).collect();
    h.core.set_forwards(h.now, &b2);
    for _ in 0..3 {
        h.drain(&[]); // at most 10 000 actions each
    }
    let (b, c) = binds_and_closes(&mut h);
    assert_eq!((b.len(), c.len()), (1000, 1000));
    let mut closed: Vec<SockId> = c;
    let mut reused: Vec<SockId> = b.iter().map(|(s, _)| *s).collect();
    closed.sort_by_key(|s| s.0);
    reused.sort_by_key(|s| s.0);
    assert_eq!(closed, reused, "freed listener slots are taken again");
    assert!(b.iter().all(|(_, a)| (6000..7000).contains(&a.port())));
    assert_eq!(h.core.socket_count(), 5000);
}

//! One-line summaries of frames for timelines.

use super::*;

/// Tracks the initial sequence number of each direction of each TCP flow, so
/// that summaries show relative numbers (as packetdrill does).
#[derive(Default, Debug, Clone)]
pub struct SeqTracker {
    isn: BTreeMap<(SocketAddr, SocketAddr), u32>,
}

impl SeqTracker {
    /// Sequence number `seq` of direction `src → dst`, relative to its ISN.
    /// A SYN (re)defines the ISN; otherwise the first number seen does.
    pub fn rel_seq(&mut self, src: SocketAddr, dst: SocketAddr, seq: u32, syn: bool) -> u32 {
        let e = self.isn.entry((src, dst)).or_insert(seq);
        if syn {
            *e = seq;
        }
        seq.wrapping_sub(*e)
    }

    /// The initial sequence number of direction `src → dst`, if seen.
    pub fn isn(&self, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        self.isn.get(&(src, dst)).copied()
    }

    /// Acknowledgement number `ack` sent by `src` to `dst`, relative to the ISN
    /// of the other direction (absolute if unknown).
    pub fn rel_ack(&self, src: SocketAddr, dst: SocketAddr, ack: u32) -> u32 {
        match self.isn.get(&(dst, src)) {
            Some(i) => ack.wrapping_sub(*i),
            None => ack,
        }
    }
}

/// The flags of a segment in packetdrill notation (`S.`, `F.`, `R`, `P.`).
pub fn flag_str(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (flags::SYN, 'S'),
        (flags::FIN, 'F'),
        (flags::RST, 'R'),
        (flags::PSH, 'P'),
        (flags::URG, 'U'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if f & flags::ACK != 0 {
        s.push('.');
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

pub(super) fn mac_str(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(super) fn sa(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A one-line summary of a frame. `tcp` makes TCP numbers relative.
pub fn summarize(frame: &[u8], tcp: &mut SeqTracker) -> String {
    let p = match SlicedPacket::from_ethernet(frame) {
        Ok(p) => p,
        Err(e) => return format!("malformed ({e}) len {}", frame.len()),
    };
    let mut s = match &p.net {
        None => {
            let et = frame
                .get(12..14)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            return format!("ethertype 0x{et:04x} len {}", frame.len());
        }
        Some(NetSlice::Arp(a)) => return arp_summary(a.slice()),
        Some(net) => {
            let Some((src, dst)) = ip_addrs(net) else {
                return "?".into();
            };
            match &p.transport {
                Some(TransportSlice::Tcp(_)) => match parse_tcp(frame) {
                    Some(t) => tcp_summary(&t, tcp),
                    None => "TCP ?".into(),
                },
                Some(TransportSlice::Udp(u)) => {
                    let mut s = format!(
                        "UDP {} > {} len {}",
                        sa(src, u.source_port()),
                        sa(dst, u.destination_port()),
                        u.payload().len()
                    );
                    s.push_str(&udp_app(u.source_port(), u.destination_port(), u.payload()));
                    s
                }
                Some(TransportSlice::Icmpv4(i)) => {
                    let b = i.bytes5to8();
                    let what = match i.type_u8() {
                        0 => "echo-reply",
                        8 => "echo-request",
                        3 => "unreachable",
                        11 => "time-exceeded",
                        _ => "type",
                    };
                    format!(
                        "ICMP {src} > {dst} {what} id {} seq {} len {}",
                        u16::from_be_bytes([b[0], b[1]]),
                        u16::from_be_bytes([b[2], b[3]]),
                        i.payload().len()
                    )
                }
                Some(TransportSlice::Icmpv6(i)) => icmp6_summary(src, dst, i.slice()),
                Some(TransportSlice::Igmp(_)) => format!("IGMP {src} > {dst}"),
                None => format!("IP {src} > {dst} proto {}", ip_proto(net)),
            }
        }
    };
    if let Err(e) = check_frame(frame, usize::MAX) {
        let _ = write!(s, " [invalid: {e}]");
    }
    s
}

pub(super) fn ip_proto(net: &NetSlice<'_>) -> u8 {
    match net {
        NetSlice::Ipv4(v) => v.payload().ip_number.0,
        NetSlice::Ipv6(v) => v.payload().ip_number.0,
        NetSlice::Arp(_) => 0,
    }
}

pub(super) fn arp_summary(a: &[u8]) -> String {
    if a.len() < 28 {
        return format!("ARP malformed len {}", a.len());
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sha = mac_str(&a[8..14]);
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    match op {
        1 => format!("ARP who-has {tpa} tell {spa}"),
        2 => format!("ARP reply {spa} is-at {sha}"),
        o => format!("ARP op {o}"),
    }
}

pub(super) fn tcp_summary(t: &TcpSeg, tr: &mut SeqTracker) -> String {
    let rel = tr.rel_seq(t.src, t.dst, t.seq, t.flags & flags::SYN != 0);
    let len = t.payload.len() as u32;
    let mut s = format!(
        "TCP {} > {} {} {}:{}({})",
        sa(t.src.ip(), t.src.port()),
        sa(t.dst.ip(), t.dst.port()),
        flag_str(t.flags),
        rel,
        rel.wrapping_add(len),
        len
    );
    if t.flags & flags::ACK != 0 {
        let _ = write!(s, " ack {}", tr.rel_ack(t.src, t.dst, t.ack));
    }
    let _ = write!(s, " win {}", t.win);
    if !t.opts.is_empty() {
        let _ = write!(s, " <{}>", t.opts);
    }
    s
}

pub(super) fn udp_app(sport: u16, dport: u16, pl: &[u8]) -> String {
    if (dport == 67 || dport == 68) && (sport == 67 || sport == 68) {
        // BOOTP: walk the options for the message type.
        let xid = pl
            .get(4..8)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let mut i = 240;
        let mut ty = None;
        while let Some(&code) = pl.get(i) {
            match code {
                0 => i += 1,
                255 => break,
                _ => {
                    let Some(&l) = pl.get(i + 1) else { break };
                    if code == 53 {
                        ty = pl.get(i + 2).copied();
                    }
                    i += 2 + usize::from(l);
                }
            }
        }
        let yiaddr = pl
            .get(16..20)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let name = ty
            .and_then(|t| DHCP_NAMES.get(usize::from(t)).copied())
            .unwrap_or("BOOTP");
        let mut s = format!(" DHCP {name} xid 0x{xid:08x}");
        if !yiaddr.is_unspecified() {
            let _ = write!(s, " yiaddr {yiaddr}");
        }
        return s;
    }
    if (dport == 546 || dport == 547) && (sport == 546 || sport == 547) {
        let ty = pl.first().copied().unwrap_or(0);
        let name = DHCPV6_NAMES.get(usize::from(ty)).copied().unwrap_or("?");
        let xid = pl
            .get(1..4)
            .map_or(0, |b| u32::from_be_bytes([0, b[0], b[1], b[2]]));
        return format!(" DHCPv6 {name} xid 0x{xid:06x}");
    }
    if dport == 53 || sport == 53 {
        return " DNS".into();
    }
    String::new()
}

pub(super) fn icmp6_summary(src: IpAddr, dst: IpAddr, m: &[u8]) -> String {
    let ty = m.first().copied().unwrap_or(0);
    let target = || {
        m.get(8..24)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from)
            .map_or("?".to_string(), |a| a.to_string())
    };
    let what = match ty {
        1 => "unreachable".to_string(),
        128 | 129 => {
            let f = |i: usize| {
                m.get(i..i + 2)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
            };
            format!(
                "{} id {} seq {} len {}",
                if ty == 128 {
                    "echo-request"
                } else {
                    "echo-reply"
                },
                f(4),
                f(6),
                m.len().saturating_sub(8)
            )
        }
        130..=132 | 143 => "mld".to_string(),
        133 => "router-solicitation".to_string(),
        134 => {
            let mut s = "router-advertisement".to_string();
            // Prefix information options.
            let mut i = 16;
            while let (Some(&t), Some(&l)) = (m.get(i), m.get(i + 1)) {
                if l == 0 {
                    break;
                }
                if t == 3 {
                    if let Some(b) = m
                        .get(i + 16..i + 32)
                        .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    {
                        let _ = write!(
                            s,
                            " prefix {}/{}",
                            Ipv6Addr::from(b),
                            m.get(i + 2).copied().unwrap_or(0)
                        );
                    }
                }
                if t == 5 {
                    if let Some(b) = m.get(i + 4..i + 8) {
                        let _ = write!(s, " mtu {}", u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    }
                }
                i += usize::from(l) * 8;
            }
            s
        }
        135 => format!("neighbor-solicitation who-has {}", target()),
        136 => {
            format!("neighbor-advertisement {} is-at", target())
                + &m.get(24..)
                    .and_then(|o| (o.first() == Some(&2)).then(|| o.get(2..8)).flatten())
                    .map(|mac| format!(" {}", mac_str(mac)))
                    .unwrap_or_default()
        }
        t => format!("type {t}"),
    };
    format!("ICMPv6 {src} > {dst} {what}")
}

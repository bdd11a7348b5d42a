use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};

const SAMPLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 12347 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C000 0100007F:1F90 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0000000000000000
";

const SAMPLE6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
";

/// A table much larger than the read buffer, with lines cut at every
/// buffer boundary, gives the same ports as parsed whole; a line longer
/// than the buffer is skipped, and the lines after it are not.
#[test]
fn reads_tables_larger_than_the_buffer() {
    let mut table = String::from(SAMPLE.lines().next().unwrap_or_default());
    table.push('\n');
    for i in 0..3000u32 {
        let st = if i % 7 == 0 { "0A" } else { "01" };
        table.push_str(&format!(
                "{i:4}: 0100007F:{:04X} 0100007F:D431 {st} 00000000:00000000 00:00000000 00000000     0        0 {i} 1 0000000000000000 20 4 30 10 -1\n",
                1000 + i
            ));
    }
    let path = std::env::temp_dir().join(format!("passt-rs-scan-{}", std::process::id()));
    let long = format!("   9: {}:0001 0 0A\n", "0".repeat(300));
    std::fs::write(&path, format!("{table}{long}   1: 0100007F:FFFF 0 0A\n")).unwrap();
    let f = File::open(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let mut whole = PortSet::default();
    parse_listening(table.as_bytes(), &mut whole);
    whole.insert(0xffff);
    for size in [200usize, 257, 4096, SCAN_BUF] {
        let mut buf = vec![0u8; size];
        let mut got = PortSet::default();
        read_lines_at(&f, &mut buf, |l| parse_listening(l, &mut got)).unwrap();
        let mut want = whole.clone();
        if size > long.len() {
            want.insert(1);
        }
        assert_eq!(got, want, "buffer of {size} bytes");
    }
    assert_eq!(whole.iter().count(), 3000 / 7 + 2);
}

#[test]
fn parses_listening_sockets_only() {
    let mut s = PortSet::default();
    parse_listening(SAMPLE.as_bytes(), &mut s);
    parse_listening(SAMPLE6.as_bytes(), &mut s);
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![22, 80, 8080]);
}

#[test]
fn garbage_is_skipped() {
    let mut s = PortSet::default();
    for t in [
        &b""[..],
        b"\n\n",
        b"0: x:y z 0A",
        b"0: 0100007F:123456789 0:0 0A",
        b"0 0100007F:0050 0:0 0A",
        b"0: 0100007F:0050 0:0 0Z",
        b"0: 01000:07F:0050 0:0",
        b"0: 0100007F: 0:0 0A",
    ] {
        parse_listening(t, &mut s);
    }
    assert!(s.is_empty(), "{s:?}");
    parse_listening(b"0: 01000:07F:0050 0:0 0A", &mut s);
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![80], "last colon splits");
}

#[test]
fn changes_and_exclusions() {
    let mut old = PortSet::default();
    let mut new = PortSet::default();
    for p in [22, 80, 65535] {
        old.insert(p);
    }
    for p in [0, 80, 443, 65535] {
        new.insert(p);
    }
    assert_eq!(old.changes(&new), (vec![0, 443], vec![22]));
    let mut ex = PortSet::default();
    ex.insert(443);
    new.remove_all(&ex);
    assert!(!new.contains(443) && new.contains(80));
    assert_eq!(old.changes(&old.clone()), (vec![], vec![]));
}

proptest! {
    /// Any text: no panic; formatted tables parse back to their ports.
    #[test]
    fn arbitrary_text_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut s = PortSet::default();
        parse_listening(&b, &mut s);
    }

    #[test]
    fn formatted_tables_round_trip(
        rows in proptest::collection::vec((any::<u16>(), prop_oneof![Just(0x0au8), 1u8..12]), 0..40)
    ) {
        let mut text = String::from("  sl  local_address rem_address   st\n");
        let mut want = PortSet::default();
        for (i, (port, st)) in rows.iter().enumerate() {
            text.push_str(&format!(
                "{i:4}: 0100007F:{port:04X} 00000000:0000 {st:02X} 00000000:00000000\n"
            ));
            if *st == ST_LISTEN {
                want.insert(*port);
            }
        }
        let mut got = PortSet::default();
        parse_listening(text.as_bytes(), &mut got);
        prop_assert_eq!(got, want);
    }
}

fn auto_fwd(tcp_in: &[&str], tcp_out: &[&str], base: &[Forward]) -> Option<AutoForward> {
    use crate::fwd::SpecKind;
    let eph = (49152, 65535);
    let fwd = Forwarding {
        tcp_in: FwdTable::from_specs(tcp_in, SpecKind::PastaInbound, eph)
            .unwrap()
            .0,
        tcp_out: FwdTable::from_specs(tcp_out, SpecKind::PastaOutbound, eph)
            .unwrap()
            .0,
        ..Forwarding::default()
    };
    AutoForward::new(PortScanner::open_here(false).unwrap(), &fwd, base)
}

/// An `AutoForward` with `udp_in` and `udp_out` as given, TCP inbound
/// off unless `tcp_in`.
fn auto_udp(tcp_in: &str, udp_in: &str, tcp_out: &str, udp_out: &str) -> Option<AutoForward> {
    use crate::fwd::SpecKind;
    let eph = (49152, 65535);
    let t = |s: &str, k| FwdTable::from_specs(&[s], k, eph).unwrap().0;
    let fwd = Forwarding {
        tcp_in: t(tcp_in, SpecKind::PastaInbound),
        tcp_out: t(tcp_out, SpecKind::PastaOutbound),
        udp_in: t(udp_in, SpecKind::PastaInbound),
        udp_out: t(udp_out, SpecKind::PastaOutbound),
    };
    AutoForward::new(PortScanner::open_here(true).unwrap(), &fwd, &[])
}

/// The forwards of `proto` of a scan's result.
fn of(c: Option<Vec<Forward>>, proto: Proto) -> Option<Vec<Forward>> {
    c.map(|f| f.into_iter().filter(|f| f.proto == proto).collect())
}

fn tcp_of(c: Option<Vec<Forward>>) -> Option<Vec<Forward>> {
    of(c, Proto::Tcp)
}

fn ports(f: &[Forward]) -> Vec<u16> {
    f.iter().map(|f| f.first).collect()
}

/// Only `auto` mode scans; outbound ports are excluded.
#[test]
fn auto_forward_only_in_auto_mode() {
    assert!(auto_fwd(&["8080"], &[], &[]).is_none());
    assert!(auto_fwd(&["none"], &[], &[]).is_none());
    let a = auto_fwd(&["auto"], &["5000-5002,~5001"], &[]).unwrap();
    assert!(a.inbound.exclude.contains(5000) && a.inbound.exclude.contains(5002));
    assert!(!a.inbound.exclude.contains(5001));
    assert!(auto_fwd(&["auto"], &["auto"], &[])
        .unwrap()
        .inbound
        .exclude
        .is_empty());
}

/// A changed set yields every port (after the fixed forwards) once;
/// an unchanged one yields nothing.
#[test]
fn auto_forward_reports_changes_once() {
    let base = Forward {
        addr: Some(Ipv4Addr::LOCALHOST.into()),
        ..Forward::new(Proto::Udp, 7, 9)
    };
    let mut a = auto_fwd(&["auto"], &[], &[base]).unwrap();
    a.inbound.fresh.insert(443);
    a.inbound.fresh.insert(80);
    assert!(a.inbound.take(["TCP", "UDP"]));
    let f = a.forwards();
    assert_eq!(ports(&f), vec![7, 80, 443]);
    assert_eq!(f[0], base);
    assert!(f[1..].iter().all(|f| f.addr.is_none()
        && f.proto == Proto::Tcp
        && f.first == f.last
        && f.first == f.target_port));
    a.inbound.fresh.clear();
    a.inbound.fresh.insert(80);
    a.inbound.fresh.insert(443);
    assert!(!a.inbound.take(["TCP", "UDP"]));
    a.inbound.fresh.clear();
    a.inbound.fresh.insert(443);
    assert!(a.inbound.take(["TCP", "UDP"]));
    assert_eq!(ports(&a.forwards()), vec![7, 443]);
    a.inbound.fresh.clear();
    assert!(a.inbound.take(["TCP", "UDP"]));
    assert_eq!(ports(&a.forwards()), vec![7]);
}

/// Scans happen at most once per interval, and see a new listener.
#[test]
fn auto_forward_scans_once_a_second() {
    let mut a = auto_fwd(&["auto"], &[], &[]).unwrap();
    assert_eq!(a.deadline(), None);
    let t0 = Instant::from_millis(1000);
    let first = tcp_of(a.poll(t0));
    assert_eq!(a.deadline(), Some(t0 + SCAN_INTERVAL));
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let p = l.local_addr().unwrap().port();
    assert!(!first.unwrap_or_default().iter().any(|f| f.first == p));
    assert!(a.poll(Instant::from_millis(1999)).is_none(), "too early");
    let f = tcp_of(a.poll(Instant::from_millis(2000))).expect("a new port");
    assert!(f.iter().any(|f| f.first == p && f.addr.is_none()));
    drop(l);
    let f = tcp_of(a.poll(Instant::from_millis(3000))).expect("a port gone");
    assert!(!f.iter().any(|f| f.first == p));
}

/// The scanner sees a listener of this process appear and go away, both
/// families, and ignores connected sockets and excluded ports.
#[test]
fn scan_sees_listeners_come_and_go() {
    let mut sc = PortScanner::open_here(false).unwrap();
    let mut before = PortSet::default();
    sc.scan(&PortSet::default(), &mut before).unwrap();
    let l4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let p4 = l4.local_addr().unwrap().port();
    let l6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).ok();
    let p6 = l6.as_ref().map(|l| l.local_addr().unwrap().port());
    let _c = TcpStream::connect(l4.local_addr().unwrap()).unwrap();
    let mut now = PortSet::default();
    sc.scan(&PortSet::default(), &mut now).unwrap();
    assert!(now.contains(p4));
    if let Some(p) = p6 {
        assert!(now.contains(p));
    }
    let mut ex = PortSet::default();
    ex.insert(p4);
    let mut masked = PortSet::default();
    sc.scan(&ex, &mut masked).unwrap();
    assert!(!masked.contains(p4));
    drop(l4);
    drop(l6);
    let mut after = PortSet::default();
    sc.scan(&PortSet::default(), &mut after).unwrap();
    assert!(!after.contains(p4));
    let (_, removed) = now.changes(&after);
    assert!(removed.contains(&p4));
}

#[test]
fn parses_bound_udp_sockets_only() {
    let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0
  101: 0100007F:0035 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000000000000 0
";
    let mut s = PortSet::default();
    parse_state(udp.as_bytes(), ST_UDP_BOUND, &mut s);
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![5353]);
    // The TCP parser does not take UDP's state, nor the reverse.
    let mut t = PortSet::default();
    parse_listening(udp.as_bytes(), &mut t);
    assert!(t.is_empty());
    parse_state(SAMPLE.as_bytes(), ST_UDP_BOUND, &mut t);
    assert!(t.is_empty());
}

/// `-U auto`: a UDP port bound on the host (here: this process's
/// namespace) becomes a forward from the namespace's loopback, gone
/// again once the socket closes; explicit `-u` ports are not the host's.
#[test]
fn auto_outbound_udp_follows_host_sockets() {
    use crate::fwd::SpecKind;
    let eph = (49152, 65535);
    let t = |s: &str, k| FwdTable::from_specs(&[s], k, eph).unwrap().0;
    let fwd = Forwarding {
        tcp_in: t("none", SpecKind::PastaInbound),
        tcp_out: t("none", SpecKind::PastaOutbound),
        udp_in: t("none", SpecKind::PastaInbound),
        udp_out: t("auto", SpecKind::PastaOutbound),
    };
    let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = s.local_addr().unwrap().port();
    let base = [Forward::new(Proto::Udp, port, port)];
    let host = || Some(PortScanner::open_here(true).unwrap());
    // Without the host's UDP tables, nothing runs.
    assert!(AutoForward::build(
        None,
        Some(PortScanner::open_here(false).unwrap()),
        &fwd,
        &[]
    )
    .is_none());
    let mut a = AutoForward::build(None, host(), &fwd, &[]).unwrap();
    assert!(a.outbound.udp_on && !a.outbound.tcp_on);
    let f = of(a.poll(Instant::ZERO), Proto::Udp).expect("ports found");
    let mine: Vec<&Forward> = f.iter().filter(|f| f.first == port).collect();
    assert_eq!(mine.len(), 1, "{f:?}");
    assert_eq!(mine[0].netns, passt_core::Netns::Guest);
    // An explicit -u port of the same number is pasta's own.
    let mut b = AutoForward::build(None, host(), &fwd, &base).unwrap();
    let f = b.poll(Instant::ZERO).unwrap_or_default();
    assert!(
        !f.iter()
            .any(|f| f.first == port && f.netns == passt_core::Netns::Guest),
        "{f:?}"
    );
    drop(s);
    let later = Instant::ZERO.saturating_add(SCAN_INTERVAL);
    let f = of(a.poll(later), Proto::Udp).expect("a port went away");
    assert!(!f.iter().any(|f| f.first == port), "{f:?}");
}

/// UDP `auto` alone scans; outbound UDP and TCP ports are excluded
/// from their own parts.
#[test]
fn auto_udp_modes_and_exclusions() {
    assert!(auto_udp("none", "none", "none", "none").is_none());
    assert!(auto_udp("none", "5000", "none", "none").is_none());
    let a = auto_udp("none", "auto", "7000", "6000-6001").unwrap();
    assert!(!a.inbound.tcp_on && a.inbound.udp_on);
    assert!(a.inbound.udp_exclude.contains(6000) && a.inbound.udp_exclude.contains(6001));
    assert!(a.inbound.exclude.contains(7000) && !a.inbound.udp_exclude.contains(7000));
    // Without the UDP tables, UDP auto cannot run.
    let fwd = Forwarding {
        udp_in: FwdTable::from_specs(
            &["auto"],
            crate::fwd::SpecKind::PastaInbound,
            (49152, 65535),
        )
        .unwrap()
        .0,
        ..Forwarding::default()
    };
    assert!(AutoForward::new(PortScanner::open_here(false).unwrap(), &fwd, &[]).is_none());
}

/// A bound UDP socket and a listening TCP socket both become UDP
/// forwards; a connected UDP socket and excluded ports do not; TCP
/// forwarding (off) reports nothing.
#[test]
fn auto_udp_follows_bound_udp_and_listening_tcp() {
    use std::net::UdpSocket;
    let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let pu = u.local_addr().unwrap().port();
    let excluded = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let px = excluded.local_addr().unwrap().port();
    let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    c.connect(u.local_addr().unwrap()).unwrap();
    let pc = c.local_addr().unwrap().port();
    let l = TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
        .or_else(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .unwrap();
    let pt = l.local_addr().unwrap().port();
    let mut a = auto_udp("none", "auto", "none", &px.to_string()).unwrap();
    let f = a.poll(Instant::from_millis(0)).expect("ports found");
    assert!(f.iter().all(|f| f.proto == Proto::Udp), "{f:?}");
    let has = |p: u16| f.iter().any(|f| f.first == p && f.target_port == p);
    assert!(has(pu) && has(pt), "{f:?}");
    assert!(!has(px) && !has(pc), "{f:?}");
    assert!(f.iter().all(|f| f.addr.is_none()));
    drop(u);
    drop(l);
    let f = of(a.poll(Instant::from_millis(1000)), Proto::Udp).expect("ports gone");
    assert!(!f.iter().any(|f| f.first == pu || f.first == pt));
}

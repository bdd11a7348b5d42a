use super::super::testns::*;
use super::*;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::neighbour::{NeighbourHeader, NeighbourState};

const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

/// A watch for template interfaces 7 (IPv4) and 8 (IPv6), on a socket that
/// never receives anything (no namespace needed).
fn watch() -> NeighWatch {
    let sock = Socket::new(NETLINK_ROUTE).expect("netlink socket");
    NeighWatch {
        sock,
        ifindex: [Some(7), Some(8)],
        buf: Vec::new(),
        malformed: 0,
        overruns: 0,
    }
}

/// A new reachable entry for `addr` on `ifindex` with link-layer address
/// `lladdr`.
fn reachable(ifindex: u32, addr: &str, lladdr: &[u8]) -> Vec<u8> {
    msg(
        false,
        ifindex,
        a(addr),
        NeighbourState::Reachable,
        Some(lladdr),
    )
}

fn msg(
    del: bool,
    ifindex: u32,
    addr: IpAddr,
    state: NeighbourState,
    lladdr: Option<&[u8]>,
) -> Vec<u8> {
    let mut n = NeighbourMessage::default();
    n.header = NeighbourHeader {
        family: if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        },
        ifindex,
        state,
        kind: RouteType::Unicast,
        ..NeighbourHeader::default()
    };
    n.attributes
        .push(NeighbourAttribute::Destination(addr.into()));
    if let Some(l) = lladdr {
        n.attributes
            .push(NeighbourAttribute::LinkLayerAddress(l.to_vec()));
    }
    let inner = if del {
        RouteNetlinkMessage::DelNeighbour(n)
    } else {
        RouteNetlinkMessage::NewNeighbour(n)
    };
    let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
    m.finalize();
    let mut out = vec![0u8; m.buffer_len()];
    m.serialize(&mut out);
    out
}

fn events(w: &mut NeighWatch, data: &[u8]) -> Vec<NeighEvent> {
    let mut out = Vec::new();
    w.datagram(data, &mut |e| out.push(e));
    out
}

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn notifications_become_events() {
    let mut w = watch();
    let v4 = a("192.0.2.9");
    let v6 = a("2001:db8::9");
    let mut d = msg(false, 7, v4, NeighbourState::Reachable, Some(&MAC));
    d.extend(msg(false, 8, v6, NeighbourState::Stale, Some(&MAC)));
    // Not valid yet, deleted: no MAC.
    d.extend(msg(false, 7, v4, NeighbourState::Incomplete, None));
    d.extend(msg(false, 7, v4, NeighbourState::Failed, Some(&MAC)));
    d.extend(msg(true, 8, v6, NeighbourState::Reachable, Some(&MAC)));
    // Another interface, an entry without a link-layer address: nothing.
    d.extend(msg(false, 9, v4, NeighbourState::Reachable, Some(&MAC)));
    d.extend(msg(false, 8, v4, NeighbourState::Reachable, Some(&MAC)));
    d.extend(msg(false, 7, v4, NeighbourState::Noarp, None));
    let mac = Some(Mac(MAC));
    assert_eq!(
        events(&mut w, &d),
        vec![
            NeighEvent { addr: v4, mac },
            NeighEvent { addr: v6, mac },
            NeighEvent {
                addr: v4,
                mac: None
            },
            NeighEvent {
                addr: v4,
                mac: None
            },
            NeighEvent {
                addr: v6,
                mac: None
            },
        ]
    );
    assert_eq!(w.malformed, 0);
}

#[test]
fn malformed_messages_are_counted_not_fatal() {
    let mut w = watch();
    let good = reachable(7, "192.0.2.9", &MAC);
    // A link-layer address that is not Ethernet's.
    let mut d = reachable(7, "192.0.2.9", &[1, 2, 3]);
    // A message the parser refuses (a truncated header), then a good one.
    let mut bad = good.clone();
    bad.truncate(20);
    bad[0..4].copy_from_slice(&20u32.to_ne_bytes());
    d.extend(&bad);
    d.extend(&good);
    assert_eq!(events(&mut w, &d).len(), 1);
    assert_eq!(w.malformed, 2);
    // A length past the end: the rest of the datagram goes.
    let mut d = good.clone();
    d[0..4].copy_from_slice(&1000u32.to_ne_bytes());
    assert!(events(&mut w, &d).is_empty());
    // Too short to frame, and empty.
    assert!(events(&mut w, &[1, 2, 3]).is_empty());
    assert!(events(&mut w, &[]).is_empty());
    assert_eq!(w.malformed, 4);
}

#[test]
fn garbage_never_panics() {
    let mut w = watch();
    let good = reachable(8, "2001:db8::9", &MAC);
    for cut in 0..good.len() {
        let _ = events(&mut w, &good[..cut]);
        let mut flipped = good.clone();
        flipped[cut] ^= 0xff;
        let _ = events(&mut w, &flipped);
    }
}

#[test]
fn follows_the_table_of_a_namespace() {
    in_netns(|| {
        ip("link add v0 type veth peer name v1");
        ip("link set v0 up");
        ip("link set v1 up");
        ip("addr add 192.0.2.1/24 dev v0");
        let i = crate::netlink::link_index("v0").unwrap();
        ip("neigh add 192.0.2.9 lladdr 02:11:22:33:44:55 dev v0 nud permanent");
        let mut w = NeighWatch::open(Some(i), Some(i)).unwrap();
        let mac = Some(Mac(MAC));
        let v4 = a("192.0.2.9");
        assert_eq!(w.dump().unwrap(), vec![NeighEvent { addr: v4, mac }]);
        let mut got = Vec::new();
        w.read(|e| got.push(e));
        assert!(got.is_empty());
        ip("neigh replace 192.0.2.9 lladdr 02:11:22:33:44:66 dev v0 nud reachable");
        ip("neigh add 2001:db8::9 lladdr 02:11:22:33:44:55 dev v0 nud stale");
        ip("neigh del 192.0.2.9 dev v0");
        w.read(|e| got.push(e));
        // A deletion may be reported twice (failed, then deleted).
        got.dedup();
        let moved = Some(Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x66]));
        assert_eq!(
            got,
            vec![
                NeighEvent {
                    addr: v4,
                    mac: moved
                },
                NeighEvent {
                    addr: a("2001:db8::9"),
                    mac
                },
                NeighEvent {
                    addr: v4,
                    mac: None
                },
            ]
        );
        assert_eq!(w.malformed, 0);
    });
}

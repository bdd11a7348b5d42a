//! Tests of the engine's intake: batches, learning, drops, grouping, queue limits.

use crate::testutil::{capture_config, drain_binds, exchange, GUEST_MAC};
use crate::wire::headers::{finish_ip_frame, l4_offset, Ends, PROTO_TCP, PROTO_UDP};
use crate::{Config, Core, DropReason, FrameBatch, FrameRef, Instant, Mac};
use core::net::{IpAddr, Ipv4Addr};

fn seg(proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 256 + payload.len()];
    let off = l4_offset(src.is_ipv6());
    b[off..off + 2].copy_from_slice(&sport.to_be_bytes());
    b[off + 2..off + 4].copy_from_slice(&dport.to_be_bytes());
    let hlen = if proto == PROTO_TCP {
        b[off + 12] = 0x50;
        20
    } else {
        b[off + 4..off + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        8
    };
    b[off + hlen..off + hlen + payload.len()].copy_from_slice(payload);
    let ends = Ends::new(Mac::OUR_DEFAULT, GUEST_MAC, src, dst);
    let n = finish_ip_frame(&mut b, ends, proto, hlen + payload.len()).unwrap();
    b.truncate(n);
    b
}

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, d))
}

#[test]
fn segments_are_grouped_per_flow() {
    let mut core = Core::new(capture_config());
    let a1 = seg(PROTO_TCP, v4(2), v4(9), 1000, 80, b"a");
    let b1 = seg(PROTO_UDP, v4(2), v4(9), 1000, 80, b"b");
    let a2 = seg(PROTO_TCP, v4(2), v4(9), 1000, 80, b"c");
    let c1 = seg(PROTO_TCP, v4(2), v4(9), 1001, 80, b"d");
    exchange(&mut core, Instant::ZERO, &[&a1, &b1, &a2, &c1]);
    let c = core.counters();
    assert_eq!(c.frames_in, 4);
    assert_eq!(c.l4_segments, 4);
    // TCP 1000, UDP 1000 and TCP 1001 are three flows.
    assert_eq!(c.l4_sequences, 3);
}

#[test]
fn guest_mac_and_addresses_are_learnt() {
    let mut cfg = capture_config();
    cfg.features.udp = false;
    let mut core = Core::new(cfg);
    assert_eq!(core.guest().mac, Mac::BROADCAST);
    assert!(!core.guest().seen);
    let f = seg(PROTO_UDP, v4(5), v4(9), 1, 2, b"");
    exchange(&mut core, Instant::ZERO, &[&f]);
    assert_eq!(core.guest().mac, GUEST_MAC);
    assert_eq!(core.guest().ip4_seen, Some(Ipv4Addr::new(10, 77, 0, 5)));
    assert!(core.guest().seen);
    assert_eq!(core.counters().dropped(DropReason::ProtocolDisabled), 1);
    let ll: IpAddr = "fe80::5".parse().unwrap();
    let g: IpAddr = "fd77::5".parse().unwrap();
    let f6 = seg(PROTO_UDP, ll, "fd77::9".parse().unwrap(), 1, 2, b"");
    exchange(&mut core, Instant::ZERO, &[&f6]);
    assert_eq!(core.guest().ip6_ll_seen, Some("fe80::5".parse().unwrap()));
    assert_eq!(core.guest().ip6_seen.map(IpAddr::V6), Some(ll));
    let f6 = seg(PROTO_UDP, g, "fd77::9".parse().unwrap(), 1, 2, b"");
    exchange(&mut core, Instant::ZERO, &[&f6]);
    assert_eq!(core.guest().ip6_seen.map(IpAddr::V6), Some(g));
    core.handle_tap_reset(Instant::ZERO);
    assert_eq!(core.guest().mac, Mac::BROADCAST);
    assert!(!core.guest().seen);
}

#[test]
fn disabled_families_and_bad_descriptors_are_counted() {
    let cfg = Config {
        ip6: None,
        ..capture_config()
    };
    let mut core = Core::new(cfg);
    let f6 = seg(
        PROTO_UDP,
        "fd77::2".parse().unwrap(),
        "fd77::9".parse().unwrap(),
        1,
        2,
        b"",
    );
    exchange(&mut core, Instant::ZERO, &[&f6]);
    assert_eq!(core.counters().dropped(DropReason::Ipv6Disabled), 1);
    let buf = [0u8; 20];
    let refs = [
        FrameRef {
            offset: 10,
            len: 20,
        },
        FrameRef { offset: 0, len: 5 },
    ];
    core.handle_tap_batch(Instant::ZERO, &FrameBatch::new(&buf, &refs));
    assert_eq!(core.counters().dropped(DropReason::BadDescriptor), 1);
    assert_eq!(core.counters().dropped(DropReason::EthTruncated), 1);
    assert_eq!(core.counters().frames_in, 3);
}

#[test]
fn batch_limit_is_enforced() {
    let mut cfg = capture_config();
    cfg.limits.batch_frames = 2;
    let mut core = Core::new(cfg);
    let f = seg(PROTO_TCP, v4(2), v4(9), 1, 2, b"");
    exchange(&mut core, Instant::ZERO, &[&f, &f, &f, &f]);
    assert_eq!(core.counters().dropped(DropReason::BatchFull), 2);
    assert_eq!(core.counters().l4_segments, 2);
}

#[test]
fn spans_out_of_range_are_empty() {
    let core = Core::new(capture_config());
    assert!(core
        .spans(crate::SpanList { start: 5, count: 3 })
        .is_empty());
    assert!(core
        .spans(crate::SpanList {
            start: u32::MAX,
            count: u32::MAX
        })
        .is_empty());
}

#[test]
fn interface_bound_forwards_bind_to_the_interface() {
    use crate::{Forward, Proto, SockKind};
    let mut cfg = capture_config();
    // -t %eth7/6900 -u %eth7/6901, eth7 being interface 7.
    let on_eth7 = |proto, port| Forward {
        ifindex: Some(7),
        ..Forward::new(proto, port, port)
    };
    cfg.forwards = vec![on_eth7(Proto::Tcp, 6900), on_eth7(Proto::Udp, 6901)];
    let mut core = Core::new(cfg);
    core.start(Instant::ZERO);
    let binds: Vec<_> = drain_binds(&mut core)
        .into_iter()
        .map(|(kind, addr, opts)| (kind, addr.port(), opts.device))
        .collect();
    assert!(
        binds.contains(&(SockKind::TcpListener, 6900, Some(7))),
        "{binds:?}"
    );
    assert!(binds.contains(&(SockKind::Udp, 6901, Some(7))), "{binds:?}");
}

/// A batch asking for more work than the action queue holds: flows are
/// admitted while a quarter of the queue stays free, the rest of the
/// datagrams are dropped and counted, and no action is lost.
#[test]
fn action_queue_bound_refuses_new_work_not_actions() {
    let mut cfg = capture_config();
    cfg.limits.actions = 64;
    let mut core = Core::new(cfg);
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|i| seg(PROTO_UDP, v4(2), v4(9), 1000 + i, 53, b"q"))
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    exchange(&mut core, Instant::ZERO, &refs);
    let mut sends = 0;
    let mut n = 0;
    while let Some(a) = core.poll_action() {
        n += 1;
        if matches!(a, crate::Action::SendDatagrams { .. }) {
            sends += 1;
        }
    }
    // Each flow takes six actions (Open, Bind, Connect, SetInterest, the
    // guest's TTL of 255 as SetOption, SendDatagrams); new ones start
    // while at most 32 are queued.
    assert_eq!((core.flow_count(), sends, n), (6, 6, 36));
    let c = core.counters();
    assert_eq!(c.dropped(DropReason::ActionQueueFull), 34);
    assert_eq!(c.actions_refused, 0);
}

/// Listeners beyond what the action queue holds wait, and open as the
/// driver drains the queue, in order.
#[test]
fn many_listeners_open_as_the_queue_drains() {
    use crate::{Action, Forward, Proto};
    let mut cfg = capture_config();
    cfg.limits.actions = 64;
    cfg.forwards = vec![Forward {
        last: 5099,
        ..Forward::new(Proto::Udp, 5000, 5000)
    }];
    let mut core = Core::new(cfg);
    core.start(Instant::ZERO);
    let mut binds = Vec::new();
    while let Some(a) = core.poll_action() {
        if let Action::Bind { addr, .. } = a {
            binds.push(addr.port());
        }
    }
    assert_eq!(binds, (5000..5100).collect::<Vec<_>>());
    assert_eq!(core.socket_count(), 100);
    assert_eq!(core.failed_forwards().count(), 0);
    // Closing them all waits for room the same way.
    core.set_forwards(Instant::ZERO, &[]);
    let mut closes = 0;
    while let Some(a) = core.poll_action() {
        assert!(matches!(a, Action::Close { .. }));
        closes += 1;
    }
    assert_eq!((closes, core.socket_count()), (100, 0));
}

/// A guest that opens 4096 UDP flows gets its quota of the flow table
/// (`Limits::udp_flows`), the rest refused and counted; a TCP SYN after
/// them still gets a flow.
#[test]
fn udp_flood_leaves_room_for_tcp_and_echo() {
    let cfg = capture_config();
    let quota = cfg.limits.udp_flows;
    assert!(quota < cfg.limits.flows);
    let mut core = Core::new(cfg);
    let mut now = Instant::ZERO;
    for chunk in 0..256u16 {
        let frames: Vec<Vec<u8>> = (0..16u16)
            .map(|i| seg(PROTO_UDP, v4(2), v4(9), 10000 + chunk * 16 + i, 53, b"q"))
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        exchange(&mut core, now, &refs);
        while core.poll_action().is_some() {}
        now = now.saturating_add(core::time::Duration::from_millis(1));
    }
    assert_eq!(core.flow_count(), quota);
    let c = core.counters();
    assert_eq!(c.dropped(DropReason::FlowQuota), 4096 - quota as u64);
    assert_eq!(c.dropped(DropReason::FlowTableFull), 0);
    // A TCP SYN.
    let mut syn = seg(PROTO_TCP, v4(2), v4(9), 40000, 80, b"");
    syn[l4_offset(false) + 13] = 0x02;
    exchange(&mut core, now, &[&syn]);
    let mut opened = false;
    while let Some(a) = core.poll_action() {
        if let crate::Action::Open { kind, .. } = a {
            opened |= kind == crate::SockKind::TcpStream;
        }
    }
    assert!(opened, "the SYN got a socket");
    assert_eq!(core.flow_count(), quota + 1);
    assert_eq!(
        core.counters().dropped(DropReason::FlowQuota),
        4096 - quota as u64
    );
}

/// A batch from a tap with virtio-net headers: each header is read and
/// stripped; a GSO frame (larger than the MTU, with a partial checksum, as
/// a namespace with TSO sends) is taken as the one segment it is; a header
/// the core does not know drops its frame, counted, and not the others.
#[test]
fn virtio_headers_in_front_of_guest_frames() {
    use crate::{FrameMeta, GsoKind, VIRTIO_NET_HDR_V1_LEN};
    let mut core = Core::new(capture_config());
    let big = seg(PROTO_TCP, v4(2), v4(9), 1000, 80, &[7u8; 20_000]);
    let small = seg(PROTO_UDP, v4(2), v4(9), 1000, 53, b"q");
    let gso = FrameMeta::tcp_gso(GsoKind::Tcp4, 34, 54, 1460, false);
    let mut buf = Vec::new();
    let mut refs = Vec::new();
    for (m, f) in [
        (Some(gso), &big),
        (Some(FrameMeta::PLAIN), &small),
        (None, &small),
    ] {
        let mut h = [0u8; VIRTIO_NET_HDR_V1_LEN];
        match m {
            Some(m) => m.write_virtio(&mut h).unwrap(),
            None => h[1] = 3, // UDP fragmentation offload: never enabled
        }
        refs.push(FrameRef {
            offset: buf.len() as u32,
            len: (h.len() + f.len()) as u32,
        });
        buf.extend_from_slice(&h);
        buf.extend_from_slice(f);
    }
    let batch = FrameBatch::new(&buf, &refs).with_virtio_hdr(VIRTIO_NET_HDR_V1_LEN);
    assert_eq!(batch.frame(0), Some(&big[..]));
    assert_eq!(batch.meta(0), Some(Ok(gso)));
    core.handle_tap_batch(Instant::ZERO, &batch);
    let c = core.counters();
    assert_eq!(c.frames_in, 3);
    assert_eq!(c.gso_frames_in, 1);
    assert_eq!(c.dropped(DropReason::BadOffload), 1);
    // The GSO segment reached TCP whole (no connection: not a SYN).
    assert_eq!(c.dropped(DropReason::TcpNoFlow), 1);
    assert_eq!(c.dropped_total(), 2);
    assert_eq!(c.l4_segments, 2, "the GSO frame and one datagram");
}

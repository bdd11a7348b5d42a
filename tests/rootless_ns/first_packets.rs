//! The first packets of a namespace pasta just configured: IPv6
//! connections and forwards work at once, without waiting for the
//! neighbour table or DAD.

use super::*;

// --- IPv6 readiness -------------------------------------------------------------

/// Fresh starts in each readiness test.
const STARTS: usize = 20;

/// Timestamp of each frame of a capture.
fn frames_with_time(path: &Path) -> Vec<(Duration, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(file).expect("pcap header");
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.expect("pcap record");
        out.push((p.timestamp, p.data.into_owned()));
    }
    out
}

/// An IPv6 frame's next header and payload (no extension headers).
fn ip6_payload(f: &[u8]) -> Option<(u8, &[u8])> {
    (f.get(12..14)? == [0x86, 0xdd]).then_some(())?;
    Some((*f.get(20)?, f.get(54..)?))
}

/// Whether `f` is a neighbour solicitation (135) or advertisement (136) for
/// the gateway's IPv6 address.
fn is_nd_for_gw(f: &[u8], kind: u8) -> bool {
    let gw: std::net::Ipv6Addr = GW_IP6.parse().expect("gateway address");
    ip6_payload(f).is_some_and(|(nh, p)| {
        nh == 58 && p.first() == Some(&kind) && p.get(8..24) == Some(&gw.octets()[..])
    })
}

/// The first IPv6 connection of a fresh namespace: in pasta's capture, the
/// namespace solicits the gateway, pasta advertises it, and the SYN
/// follows that first advertisement, 20 starts in a row. A namespace that
/// ignores pasta's first advertisement (an address not usable yet when
/// pasta said it was ready drops it) solicits again a second later, before
/// its SYN. pasta's own solicitation of the guest's address, as it starts,
/// is no part of it. The time from the gateway's solicitation to the SYN
/// depends on the machine's load, and is only printed.
#[test]
fn ipv6_first_connection_syn_follows_first_solicitation() {
    let h = Netns::host("rlsyn");
    let dir = Scratch::new("rlsyn");
    let ready = dir.join("echo.ready");
    let _srv = Proc::spawn_ready(
        h.cmd(&[
            "python3",
            &script(&dir, "echo_srv.py"),
            "7200",
            "60",
            &s(&ready),
        ]),
        "echo server",
        dir.join("echo_srv.log"),
        &ready,
    );
    let connect = script(&dir, "connect.py");
    let mut gaps = Vec::new();
    for i in 0..STARTS {
        let pcap = dir.join(&format!("start{i}.pcap"));
        let mut args = vec![s(&pasta()), "--config-net".into(), "-p".into(), s(&pcap)];
        args.extend(NO_FORWARDS.map(String::from));
        args.extend([
            "--".into(),
            "python3".into(),
            "-S".into(),
            connect.clone(),
            GW_IP6.into(),
            "7200".into(),
        ]);
        let out = h.user_run(&args, 30);
        let text = ok_text(&out);
        assert!(text.contains("connected"), "start {i}: {text}");
        let frames = frames_with_time(&pcap);
        let syn = frames.iter().position(|(_, f)| {
            ip6_payload(f).is_some_and(|(nh, p)| {
                nh == 6 && p.get(2..4) == Some(&7200u16.to_be_bytes()) && p.get(13) == Some(&0x02)
            })
        });
        let ns = frames.iter().position(|(_, f)| is_nd_for_gw(f, 135));
        let na = ns.and_then(|ns| {
            let after = frames[ns..].iter().position(|(_, f)| is_nd_for_gw(f, 136));
            after.map(|k| ns + k)
        });
        let (Some(syn), Some(ns), Some(na)) = (syn, ns, na) else {
            panic!(
                "start {i}: no SYN, or no solicitation of the gateway and answer in {}",
                pcap.display()
            );
        };
        assert!(
            na < syn,
            "start {i}: SYN (frame {syn}) before pasta's advertisement (frame {na}) in {}",
            pcap.display()
        );
        // Solicitations after the first advertisement: the namespace did not
        // take it.
        let again = frames[na..syn]
            .iter()
            .filter(|(_, f)| is_nd_for_gw(f, 135))
            .count();
        assert_eq!(
            again,
            0,
            "start {i}: the namespace solicited the gateway again after pasta's first \
             advertisement, before its SYN ({})",
            pcap.display()
        );
        gaps.push(frames[syn].0.saturating_sub(frames[ns].0));
    }
    eprintln!("SYN after the first neighbour solicitation: {gaps:?}");
}

/// 1000 IPv6 datagrams sent from the host to a `-u` forward the moment a
/// background pasta returns (as Podman starts it) all reach the guest,
/// 20 starts in a row.
#[test]
fn ipv6_udp_forward_complete_when_pasta_returns() {
    const COUNT: usize = 1000;
    let h = Netns::host("rludp");
    let dir = Scratch::new("rludp");
    let recv = script(&dir, "udp_recv.py");
    let send = script(&dir, "udp_send.py");
    for i in 0..STARTS {
        let g = UserNetns::new("rludpg");
        let ready = dir.join(&format!("recv{i}.ready"));
        let mut r = Proc::spawn_ready(
            g.cmd(&[
                "python3",
                "-S",
                &recv,
                "7300",
                &COUNT.to_string(),
                &s(&ready),
            ]),
            "receiver",
            dir.join(&format!("recv{i}.log")),
            &ready,
        );
        let pidf = dir.join(&format!("pasta{i}.pid"));
        // The sender starts first and fires as soon as the PID file, which
        // the returning parent writes, has content.
        let mut sender = Proc::spawn(
            h.cmd(&[
                "python3",
                &send,
                "::1",
                "7300",
                &COUNT.to_string(),
                &s(&pidf),
            ]),
            "sender",
            dir.join(&format!("send{i}.log")),
        );
        let mut v = g.inside();
        v.extend([
            s(&pasta()),
            "--config-net".into(),
            "--quiet".into(),
            "-l".into(),
            s(&dir.join(&format!("pasta{i}.log"))),
            "-P".into(),
            s(&pidf),
            "-t".into(),
            "none".into(),
            "-u".into(),
            "7300".into(),
            "-T".into(),
            "none".into(),
            "-U".into(),
            "none".into(),
            "--netns".into(),
            s(&g.path()),
        ]);
        let out = h.run(&v, 30);
        ok_text(&out);
        let daemon = Pasta {
            proc: None,
            daemon: std::fs::read_to_string(&pidf)
                .ok()
                .and_then(|t| t.trim().parse().ok()),
            attached: None,
            user: None,
        };
        assert!(
            sender.wait_exit(30).success(),
            "sender: {}",
            sender.output()
        );
        r.wait_exit(30);
        let got: usize = r.output().trim().parse().unwrap_or(0);
        if got != COUNT {
            panic!(
                "start {i}: {got} of {COUNT} datagrams arrived; receiver: {}; sender: {}; \
                 guest: {}; host: {}; pasta: {}",
                r.output(),
                sender.output(),
                g.sh("grep -E 'Ip6InAddrErrors|Udp6InErrors|Ip6InNoRoutes|Ip6InReceives' /proc/net/snmp6"),
                h.sh("grep -E 'Udp6InDatagrams|Udp6RcvbufErrors' /proc/net/snmp6"),
                std::fs::read_to_string(dir.join(&format!("pasta{i}.log"))).unwrap_or_default()
            );
        }
        drop(daemon);
    }
}

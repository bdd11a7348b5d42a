//! passt's socket: short frames, split and broken framing, one client at
//! a time, `--one-off`, the daemon's PID file and signals, the log file.

use super::*;

/// A passt in a test host namespace, with its socket.
fn passt_in_host(tag: &str) -> (Netns, Scratch, PathBuf, Proc) {
    let (h, dir, sock, pidf) = passt_host(tag);
    let p = h.start_passt(&sock, &pidf, dir.join("passt.log"), &[]);
    (h, dir, sock, p)
}

const GW: [u8; 4] = [10, 77, 0, 1];

/// qemu pads frames shorter than 60 bytes: the padding is ignored (an ARP
/// request padded to 60 bytes gets its reply), as is the IP length, not the
/// frame length, for IP (covered by the core's tests).
#[test]
fn passt_accepts_padded_short_frames() {
    let (_h, _dir, sock, mut p) = passt_in_host("pad");
    let mut c = StreamClient::connect(&sock);
    c.send_raw(&StreamClient::encode(&[arp_request(GW, 60)]));
    let got = c.collect(5, 1, |f| is_arp_reply_for(f, GW));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, GW)),
        "no ARP reply to a padded request; got {got:?}; passt: {}",
        p.output()
    );
    p.assert_running();
}

/// The same frames split at every byte boundary give the same replies; a
/// length over 65535 resets the client, and the next client is served.
#[test]
fn passt_stream_split_and_reset() {
    let (_h, _dir, sock, mut p) = passt_in_host("split");
    let frames = vec![
        arp_request(GW, 60),
        arp_request(GW, 42),
        arp_request(GW, 64),
    ];
    let stream = StreamClient::encode(&frames);

    let mut c = StreamClient::connect(&sock);
    c.send_raw(&stream);
    let whole: Vec<Vec<u8>> = c
        .collect(5, 3, |f| is_arp_reply_for(f, GW))
        .into_iter()
        .filter(|f| is_arp_reply_for(f, GW))
        .collect();
    assert_eq!(
        whole.len(),
        3,
        "replies to the unsplit stream; passt: {}",
        p.output()
    );

    // One byte per write, with a pause now and then so that passt sees the
    // stream in pieces of every size and at every offset.
    for (i, b) in stream.iter().enumerate() {
        c.send_raw(&[*b]);
        if i % 3 == 0 {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
    let split: Vec<Vec<u8>> = c
        .collect(5, 3, |f| is_arp_reply_for(f, GW))
        .into_iter()
        .filter(|f| is_arp_reply_for(f, GW))
        .collect();
    assert_eq!(split, whole, "split stream, same replies");

    // Every split point of the first frame, one connection.
    for cut in 1..stream.len() {
        c.send_raw(&stream[..cut]);
        std::thread::sleep(std::time::Duration::from_micros(200));
        c.send_raw(&stream[cut..]);
    }
    let n = c
        .collect(10, 3 * (stream.len() - 1), |f| is_arp_reply_for(f, GW))
        .iter()
        .filter(|f| is_arp_reply_for(f, GW))
        .count();
    assert_eq!(
        n,
        3 * (stream.len() - 1),
        "a reply to every frame at every cut"
    );

    // Too long: the client is reset.
    c.send_raw(&65536u32.to_be_bytes());
    assert!(c.closed_by_peer(5), "oversized frame must reset the client");
    p.assert_running();

    // The next client is served.
    let mut c2 = StreamClient::connect(&sock);
    c2.send_raw(&StreamClient::encode(&[arp_request(GW, 60)]));
    let got = c2.collect(5, 1, |f| is_arp_reply_for(f, GW));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, GW)),
        "second client served"
    );

    // A length below 14 resets too.
    c2.send_raw(&13u32.to_be_bytes());
    assert!(
        c2.closed_by_peer(5),
        "undersized frame must reset the client"
    );
    p.assert_running();
}

/// Only one client at a time: a second connection is closed at once, the
/// first keeps working.
#[test]
fn passt_one_client_at_a_time() {
    let (_h, _dir, sock, mut p) = passt_in_host("one");
    let mut a = StreamClient::connect(&sock);
    a.send_raw(&StreamClient::encode(&[arp_request(GW, 60)]));
    assert!(!a.collect(5, 1, |f| is_arp_reply_for(f, GW)).is_empty());
    let mut b = StreamClient::connect(&sock);
    assert!(b.closed_by_peer(5), "second client refused");
    a.send_raw(&StreamClient::encode(&[arp_request(GW, 60)]));
    let got = a.collect(5, 1, |f| is_arp_reply_for(f, GW));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, GW)),
        "first client still served"
    );
    p.assert_running();
}

/// `-1`: passt exits 0 when its client goes away.
#[test]
fn passt_one_off_exits_with_client() {
    let (h, dir, sock, pidf) = passt_host("oneoff");
    let mut p = h.start_passt(&sock, &pidf, dir.join("passt.log"), &["-1"]);
    let c = StreamClient::connect(&sock);
    drop(c);
    assert_eq!(p.wait_exit(10).code(), Some(0), "{}", p.output());
}

/// SIGTERM ends passt with status 0; in the background, the PID file holds the
/// daemon's PID. About root: passt started by root switches to nobody.
#[test]
fn passt_daemon_pid_file_and_sigterm() {
    let (h, _dir, sock, pidf) = passt_host("daemon");
    let out = h.run(
        &[
            s(&passt()),
            "-q".into(),
            "-s".into(),
            s(&sock),
            "-P".into(),
            s(&pidf),
        ],
        20,
    );
    assert!(out.status.success(), "{out:?}");
    // The daemon is ours (we started it through the parent that exited).
    let pid = read_pid(&pidf);
    assert!(!gone(pid));
    // Started as root in the initial user namespace: it runs as nobody.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534"; 4],
        "{uid}"
    );
    assert!(sigterm(pid));
    assert_ends(pid, 10, "daemon did not exit on SIGTERM");
}

/// `-l`: the log goes to the file (header line first, mode 0600), nothing
/// about syslog shows up when there is no syslog socket, and standard error
/// stays quiet.
#[test]
fn passt_log_file() {
    use std::os::unix::fs::PermissionsExt;
    let (h, dir, sock, pidf) = passt_host("log");
    let logf = dir.join("passt.log");
    let p = h.start_passt(&sock, &pidf, dir.join("passt.stderr"), &["-l", &s(&logf)]);
    let text = eventually(5, || {
        let t = std::fs::read_to_string(&logf).ok()?;
        t.contains("UNIX domain socket bound at").then_some(t)
    })
    .expect("log file written");
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("passt "), "header: {first}");
    assert!(
        first.contains(&format!("({})", p.pid())),
        "header names the PID: {first}"
    );
    let mode = std::fs::metadata(&logf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(p);
    let err = std::fs::read_to_string(dir.join("passt.stderr")).unwrap_or_default();
    assert!(!err.to_lowercase().contains("syslog"), "{err}");
    assert!(
        !err.contains("UNIX domain socket"),
        "log lines only in the file: {err}"
    );
}

//! The cases through passt's stream socket, and stream framing that lies
//! about its lengths.

use super::*;

// --- passt and its stream ------------------------------------------------------

struct Passt {
    h: Netns,
    p: Proc,
    sock: PathBuf,
    _dir: Scratch,
}

fn passt(tag: &str) -> Passt {
    let (h, dir, sock, pidf) = passt_host(tag);
    let p = h.start_passt(&sock, &pidf, dir.join("passt.log"), &["--trace"]);
    Passt {
        h,
        p,
        sock,
        _dir: dir,
    }
}

/// Our client on passt's stream; `split`: every frame goes out one byte
/// per write.
struct StreamGuest {
    c: StreamClient,
    split: bool,
}

impl Guest for StreamGuest {
    fn send(&mut self, frame: &[u8]) {
        let b = StreamClient::encode(&[frame.to_vec()]);
        if self.split {
            for (i, x) in b.iter().enumerate() {
                self.c.send_raw(&[*x]);
                if i % 7 == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        } else {
            self.c.send_raw(&b);
        }
    }

    fn recv_until(&mut self, secs: u64, stop: &dyn Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        self.c.collect(secs, 1, stop)
    }
}

/// Every case through passt, each frame whole and then split byte by byte,
/// on one client connection.
#[test]
fn passt_malformed_frames() {
    let mut t = passt("hfp");
    let peers = HostPeers::new(&t.h);
    let mut g = StreamGuest {
        c: StreamClient::connect(&t.sock),
        split: false,
    };
    let mut m = Macs {
        guest: GUEST_MAC,
        gw: [0xff; 6],
    };
    m.gw = gw_mac(&mut g, m);
    let log = || t.p.output();
    let mut failures = run_cases(&mut g, m, &peers, &log, true, true);
    g.split = true;
    failures.extend(
        run_cases(&mut g, m, &peers, &log, true, true)
            .into_iter()
            .map(|f| format!("split: {f}")),
    );
    t.p.assert_running();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Bad lengths on the stream (0, 13, 65536, 0xffffffff, each after a good
/// frame and alone) and a client leaving in the middle of a frame: each
/// resets that client only (no panic, no hang), and the next client is
/// served from a clean stream (no bytes left over from the last one).
#[test]
fn passt_bad_stream_lengths_reset_client() {
    let mut t = passt("hfl");
    let arp_req = arp_request(GW_IP4.parse::<Ipv4Addr>().unwrap().octets(), 60);
    let serve = |c: &mut StreamClient, what: &str| {
        c.send_raw(&StreamClient::encode(std::slice::from_ref(&arp_req)));
        let got = c.collect(5, 1, |f| is_arp_reply_for(f, GW4));
        assert!(
            got.iter().any(|f| is_arp_reply_for(f, GW4)),
            "{what}: the client is not served"
        );
    };
    for len in [0u32, 13, 65536, 0xffff_ffff] {
        for after_good in [false, true] {
            let what = format!(
                "length {len:#x}{}",
                if after_good {
                    " after a good frame"
                } else {
                    ""
                }
            );
            let mut c = StreamClient::connect(&t.sock);
            serve(&mut c, &what);
            let mut b = Vec::new();
            if after_good {
                b.extend(StreamClient::encode(std::slice::from_ref(&arp_req)));
            }
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&[0xa5; 64]);
            c.send_raw(&b);
            if after_good {
                let got = c.collect(5, 1, |f| is_arp_reply_for(f, GW4));
                assert!(
                    got.iter().any(|f| is_arp_reply_for(f, GW4)),
                    "{what}: the frame before the bad length is served"
                );
            }
            assert!(c.closed_by_peer(5), "{what}: the client is not reset");
            t.p.assert_running();
        }
    }
    // A client that leaves halfway through a frame: its bytes are gone
    // with it.
    for cut in [1usize, 3, 4, 20] {
        let mut c = StreamClient::connect(&t.sock);
        serve(&mut c, "before a partial frame");
        let b = StreamClient::encode(std::slice::from_ref(&arp_req));
        c.send_raw(&b[..cut]);
        std::thread::sleep(Duration::from_millis(50));
        drop(c);
        let mut c = StreamClient::connect(&t.sock);
        serve(
            &mut c,
            &format!("after a client left {cut} bytes into a frame"),
        );
    }
    t.p.assert_running();
    assert!(
        t.p.output().contains("bad frame size"),
        "the log names the bad length: {}",
        t.p.output()
    );
}

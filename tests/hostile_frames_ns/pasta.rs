//! The cases through pasta's tap device.

use super::*;

// --- pasta, frames through its tap ---------------------------------------------

/// A packet socket on the tap interface inside pasta's guest namespace:
/// what it sends, pasta reads from the tap.
struct TapGuest {
    fd: OwnedFd,
    ifindex: i32,
}

impl TapGuest {
    fn open(g: &Netns, ifname: &str) -> TapGuest {
        let name = std::ffi::CString::new(ifname).unwrap();
        in_ns(g, || {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: plain socket creation; the descriptor is owned below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor owned by no one else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
            assert!(ifindex > 0, "no interface {name:?}");
            // SAFETY: an all-zero sockaddr_ll is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto as u16;
            sa.sll_ifindex = ifindex;
            // SAFETY: `sa` lives across the call, its size passed along.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            set_sock_opt(&fd, libc::SO_RCVTIMEO, &tv);
            TapGuest { fd, ifindex }
        })
    }
}

impl Guest for TapGuest {
    fn send(&mut self, frame: &[u8]) {
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        // SAFETY: `frame` and `sa` live across the call, lengths passed along.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            r,
            frame.len() as isize,
            "sending a frame into the tap: {}",
            std::io::Error::last_os_error()
        );
    }

    fn recv_until(&mut self, secs: u64, stop: &dyn Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        let mut b = vec![0u8; 65536];
        while Instant::now() < end {
            // SAFETY: an all-zero sockaddr_ll is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `b` and `sa` are valid for writes of the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    b.as_mut_ptr().cast(),
                    b.len(),
                    0,
                    (&mut sa as *mut libc::sockaddr_ll).cast(),
                    &mut sl,
                )
            };
            // Frames from pasta only, not our own going out.
            if n <= 0 || sa.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let f = b[..n as usize].to_vec();
            let done = stop(&f);
            out.push(f);
            if done {
                break;
            }
        }
        out
    }
}

/// Every case through pasta's tap; then pasta still serves the guest's own
/// TCP connections.
#[test]
fn pasta_malformed_frames() {
    let h = Netns::host("hft");
    let g = UserNetns::new("hftg");
    let dir = Scratch::new("hft");
    let pidf = dir.join("pasta.pid");
    let mut p = Proc::spawn(
        h.user_cmd(&[
            s(&bin("pasta")),
            "-f".into(),
            "--trace".into(),
            "-P".into(),
            s(&pidf),
            "--config-net".into(),
            "--userns".into(),
            s(&g.userns_path()),
            "--netns".into(),
            g.name.clone(),
        ]),
        "pasta",
        dir.join("pasta.log"),
    );
    wait_file(&pidf, 20, &mut p);
    let ready = eventually(10, || {
        let a = g.sh("ip -o -4 addr show; ip -4 route show default");
        (a.contains(HOST_IP4) && a.contains("default via")).then_some(())
    });
    assert!(ready.is_some(), "guest not configured: {}", p.output());
    let link = g.sh("ip -o link show | grep -v ' lo:'");
    let ifname = link
        .split(':')
        .nth(1)
        .map(|n| n.trim().to_string())
        .expect("the tap interface");
    let mac_txt = g.sh(&format!(
        "cat /sys/class/net/{ifname}/address 2>/dev/null || ip -o link show {ifname}"
    ));
    let mac: Vec<u8> = mac_txt
        .split_whitespace()
        .find(|w| w.len() == 17 && w.matches(':').count() == 5 && *w != "ff:ff:ff:ff:ff:ff")
        .expect("the tap's MAC")
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    let peers = HostPeers::new(&h);
    let mut tg = TapGuest::open(&g, &ifname);
    let mut m = Macs {
        guest: mac.try_into().unwrap(),
        gw: [0xff; 6],
    };
    m.gw = gw_mac(&mut tg, m);
    let log = || p.output();
    let failures = run_cases(&mut tg, m, &peers, &log, false, false);
    p.assert_running();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The guest's own connection through the gateway still works.
    let gw = std::net::SocketAddr::from((GW_IP4.parse::<Ipv4Addr>().unwrap(), TCP_PORT));
    let mut c = in_ns(&g, || {
        std::net::TcpStream::connect_timeout(&gw, Duration::from_secs(5))
    })
    .expect("a guest connection after the malformed frames");
    // The listener's backlog holds the connections of the SYN cases too.
    let mut b = [0u8; 1];
    let served = eventually(10, || {
        let mut a = accept_timeout(&peers.tcp, 5);
        a.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        c.write_all(b"z").ok()?;
        (a.read(&mut b).ok() == Some(1)).then_some(())
    });
    assert!(
        served.is_some() && &b == b"z",
        "the guest's connection carries data"
    );
}

//! TCP timestamps (RFC 7323) between pasta and the guest's kernel: agreed
//! when the guest offers them, and what they give the guest: a port whose
//! connection sits in TIME_WAIT may be used again at once
//! (`net.ipv4.tcp_tw_reuse`), which the kernel allows only for connections
//! that carried timestamps.

use super::*;
use std::os::fd::FromRawFd;

/// The guest socket's `TCP_INFO` options (`TCPI_OPT_*`).
fn tcpi_options(s: &TcpStream) -> u8 {
    // SAFETY: tcp_info is plain data, zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer and its length are valid.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_options
}

const TCPI_OPT_TIMESTAMPS: u8 = 1;

/// A connection from the guest to `dst` out of local port `port`
/// (`SO_REUSEADDR`, so that a port in TIME_WAIT can be bound).
fn connect_from(t: &Pasta, port: u16, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    in_ns(&t.g, || {
        // SAFETY: plain socket creation; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let s = unsafe { TcpStream::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        assert_eq!(set_sock_opt(&s, libc::SO_REUSEADDR, &one), 0);
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sin(Ipv4Addr::UNSPECIFIED, port);
        // SAFETY: a valid address of the given length.
        if unsafe { libc::bind(fd, std::ptr::addr_of!(local).cast(), len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sin(*dst.ip(), dst.port());
        // SAFETY: a valid address of the given length; a blocking connect.
        if unsafe { libc::connect(fd, std::ptr::addr_of!(remote).cast(), len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    })
}

/// One byte each way on `c` (guest) and `a` (host).
fn exchange(c: &mut TcpStream, a: &mut TcpStream) {
    let mut b = [0u8; 1];
    for s in [&*c, &*a] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    c.write_all(b"q").unwrap();
    a.read_exact(&mut b).expect("request");
    a.write_all(b"r").unwrap();
    c.read_exact(&mut b).expect("answer");
}

/// The guest's kernel takes up the timestamps pasta answers its SYN with,
/// and a port whose connection the guest closed first (so it sits in
/// TIME_WAIT) connects again to the same host port a second later: with
/// `tcp_tw_reuse` set, Linux allows it only for a connection that carried
/// timestamps (the bind succeeds either way, the connect fails with
/// `EADDRNOTAVAIL` without them). The new connection on the same 4-tuple
/// carries data both ways.
#[test]
fn guest_keeps_timestamps_and_reuses_a_port_in_time_wait() {
    let t = Pasta::start("tsr", &["-t", "none"]);
    t.guest_sysctl("net/ipv4/tcp_tw_reuse", "1");
    let l = t.listen_host(any4(6320));
    let mut c = connect_from(&t, 0, gw4(6320)).expect("first connection");
    let port = c.local_addr().unwrap().port();
    let mut a = accept_timeout(&l, 10);
    assert_ne!(
        tcpi_options(&c) & TCPI_OPT_TIMESTAMPS,
        0,
        "the guest's connection has no timestamps"
    );
    exchange(&mut c, &mut a);
    // The guest closes first, the host answers with its FIN.
    drop(c);
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).expect("end of stream");
    drop(a);
    // tcp_tw_reuse=1 waits for the next second of the last timestamp.
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = connect_from(&t, port, gw4(6320)).expect("port in TIME_WAIT used again");
    let mut a = accept_timeout(&l, 10);
    exchange(&mut c, &mut a);
    assert_eq!(c.local_addr().unwrap().port(), port);
}

/// A connection from the host to a forwarded port: pasta's SYN offers
/// timestamps, and the guest's kernel takes them up.
#[test]
fn forwarded_connection_has_timestamps_in_the_guest() {
    let t = Pasta::start("tsi", &["-t", "6331"]);
    let l = t.listen_guest(any4(6331));
    let mut c = t
        .connect_host(lo4(6331))
        .expect("connect to the forwarded port");
    let mut a = accept_timeout(&l, 10);
    assert_ne!(
        tcpi_options(&a) & TCPI_OPT_TIMESTAMPS,
        0,
        "the guest's accepted connection has no timestamps"
    );
    exchange(&mut a, &mut c);
}

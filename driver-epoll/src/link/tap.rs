//! pasta's guest link: a tap device inside the target network namespace.
//!
//! `/dev/net/tun` is opened by a thread that has entered the namespace (the
//! device is created in the namespace of the opener, see `netns.rs`), with
//! `IFF_TAP | IFF_NO_PI`, non-blocking. Each `read()` returns one frame; a
//! wake-up reads as many as are ready into one batch buffer. Each frame goes
//! out with one `write()`; a full queue or a link that is down drops it.
//!
//! Unless offloads are switched off (`--no-tap-offload`), the device is
//! opened with `IFF_VNET_HDR` too: every frame, both ways, travels behind a
//! 12-byte virtio-net header (`TUNSETVNETHDRSZ`, little-endian fields with
//! `TUNSETVNETLE`), and `TUNSETOFFLOAD` (`TUN_F_CSUM | TUN_F_TSO4 |
//! TUN_F_TSO6`) lets the namespace's kernel hand us TCP segments of up to
//! 64 KiB with partial checksums; the core sends it segments as large (see
//! `passt_core::LinkOffload`). All of this happens before the sandbox
//! closes; a kernel that refuses any of it gets a plain tap.

use crate::event_loop::{RxBuf, TxArena, MAX_FRAME};
use passt_core::{LinkOffload, VIRTIO_NET_HDR_V1_LEN};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// System calls of the tap device while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // One frame per read and per write.
    SYS_read, SYS_write,
];

/// What a read from the guest link produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Zero or more frames, described in the receive buffer's refs.
    Frames,
    /// The link went away (qemu disconnected, or the tap failed).
    Reset,
}

/// An open tap device.
#[derive(Debug)]
pub(crate) struct TapDevice {
    fd: OwnedFd,
    name: String,
    /// Bytes of virtio-net header in front of each frame (0: a plain tap).
    vnet: usize,
    /// `--splice-only`: the other end of the socket pair that stands for
    /// the missing device (kept open, never read).
    _peer: Option<OwnedFd>,
}

/// The offloads asked of the tap device (`TUNSETOFFLOAD`).
const TAP_OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// Fills an `ifreq` with an interface name (truncated to IFNAMSIZ - 1).
pub(crate) fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: an all-zero ifreq is valid (empty name, zero union).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    ifr
}

fn ifname_of(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl TapDevice {
    /// Creates (or attaches to) tap interface `name` in the calling thread's
    /// network namespace; with `offload`, with virtio-net headers and
    /// offloads if the kernel takes them, else plain.
    pub(crate) fn open(name: &str, offload: bool) -> io::Result<Self> {
        if offload {
            match Self::open_with(name, true) {
                Ok(t) => return Ok(t),
                Err(e) => log::info!("tap offloads not available ({e}): a plain tap"),
            }
        }
        Self::open_with(name, false)
    }

    fn open_with(name: &str, vnet: bool) -> io::Result<Self> {
        let path = CString::new("/dev/net/tun").map_err(io::Error::other)?;
        // SAFETY: `path` is a valid C string; the result is a new fd or -1.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(failed(
                io::Error::last_os_error(),
                "opening the tun device /dev/net/tun",
            ));
        }
        // SAFETY: `raw` was just returned by open() and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ifr = ifreq(name);
        let extra = if vnet { libc::IFF_VNET_HDR } else { 0 };
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | extra) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if r < 0 {
            return Err(failed(
                io::Error::last_os_error(),
                &format!("creating the tap device {name} (TUNSETIFF on /dev/net/tun)"),
            ));
        }
        if vnet {
            set_offloads(fd.as_fd())?;
        }
        Ok(TapDevice {
            fd,
            name: ifname_of(&ifr),
            vnet: if vnet { VIRTIO_NET_HDR_V1_LEN } else { 0 },
            _peer: None,
        })
    }

    /// A tap file descriptor handed over with `--fd`: its creator chose its
    /// flags; if it asked for virtio-net headers (of a length we know),
    /// frames carry them both ways, as with [`Self::open`].
    pub(crate) fn from_fd(fd: OwnedFd, name: String) -> io::Result<Self> {
        set_nonblocking(fd.as_fd())?;
        let vnet = inherited_vnet_hdr(fd.as_fd());
        Ok(TapDevice {
            fd,
            name,
            vnet,
            _peer: None,
        })
    }

    /// Bytes of virtio-net header in front of each frame (0: none).
    pub(crate) fn vnet_hdr_len(&self) -> usize {
        self.vnet
    }

    /// What the device does for the frames we send it.
    pub(crate) fn offload(&self) -> LinkOffload {
        if self.vnet > 0 {
            LinkOffload::ALL
        } else {
            LinkOffload::NONE
        }
    }

    /// pasta `--splice-only`: no device in the namespace. One end of a
    /// datagram socket pair stands for it, so that the event loop needs no
    /// case of its own: nothing ever arrives, and the rare frame the core
    /// makes (none without a guest) is dropped once the pair's queue is
    /// full.
    pub(crate) fn detached() -> io::Result<Self> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )?;
        Ok(TapDevice {
            fd: a,
            name: String::new(),
            vnet: 0,
            _peer: Some(b),
        })
    }

    /// The interface name the kernel chose.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads every ready frame, one per `read()`, into `rx`, leaving room for
    /// a maximum-size frame at each offset.
    pub(crate) fn read_batch(&mut self, rx: &mut RxBuf) -> ReadOutcome {
        rx.refs.clear();
        let mut off = 0usize;
        let limit = rx.refs.capacity().max(1);
        while rx.refs.len() < limit {
            let Some(dst) = rx.buf.get_mut(off..off + self.vnet + MAX_FRAME) else {
                break;
            };
            match nix::unistd::read(&self.fd, dst) {
                Ok(0) => return ReadOutcome::Reset,
                Ok(n) => {
                    rx.refs.push(passt_core::FrameRef {
                        offset: off as u32,
                        len: n as u32,
                    });
                    off += n;
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("tap read: {e}");
                    return ReadOutcome::Reset;
                }
            }
        }
        ReadOutcome::Frames
    }

    /// Writes the arena's frames, one `write()` each. Frames that do not fit
    /// (EAGAIN, ENOBUFS, ENOSPC) or meet a link that is down (EIO) are
    /// dropped; all of them count as handed to the link. A short write stops
    /// the flush; that frame and the rest count as not sent.
    pub(crate) fn send(&mut self, arena: &mut TxArena) -> usize {
        let mut sent = 0;
        for i in 0..arena.len() {
            let f = if self.vnet > 0 {
                arena.vnet_frame(i, self.vnet)
            } else {
                arena.frame(i)
            };
            let Some(f) = f else { break };
            match nix::unistd::write(&self.fd, f) {
                Ok(n) if n == f.len() => sent += 1,
                Ok(_) => break,
                Err(
                    nix::errno::Errno::EAGAIN
                    | nix::errno::Errno::EINTR
                    | nix::errno::Errno::ENOBUFS
                    | nix::errno::Errno::ENOSPC
                    | nix::errno::Errno::EIO,
                ) => sent += 1,
                Err(e) => {
                    log::error!("tap write: {e}");
                    break;
                }
            }
        }
        sent
    }
}

/// Sets the virtio-net header to 12 bytes, little-endian, and asks for
/// checksum and TCP segmentation offloads.
fn set_offloads(fd: BorrowedFd<'_>) -> io::Result<()> {
    let step = |what: &str| {
        let e = io::Error::last_os_error();
        io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    let len: libc::c_int = VIRTIO_NET_HDR_V1_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int, which `len` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) } < 0 {
        return Err(step("TUNSETVNETHDRSZ"));
    }
    let le: libc::c_int = 1;
    // SAFETY: TUNSETVNETLE reads one int, which `le` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETLE, &le) } < 0
        && cfg!(target_endian = "big")
    {
        // Little-endian hosts read the header little-endian anyway.
        return Err(step("TUNSETVNETLE"));
    }
    // SAFETY: TUNSETOFFLOAD takes its flags by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, TAP_OFFLOADS) } < 0 {
        return Err(step("TUNSETOFFLOAD"));
    }
    Ok(())
}

/// The virtio-net header length of a tap descriptor we did not open: 0
/// unless it is a tap with `IFF_VNET_HDR` and a 10- or 12-byte header.
fn inherited_vnet_hdr(fd: BorrowedFd<'_>) -> usize {
    let mut ifr = ifreq("");
    // SAFETY: TUNGETIFF fills one ifreq; on another kind of file it fails.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr) } < 0 {
        return 0;
    }
    // SAFETY: the kernel filled the flags member of the union.
    let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags });
    if flags & libc::IFF_VNET_HDR == 0 {
        return 0;
    }
    let mut len: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int, which `len` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut len) } < 0 {
        return 0;
    }
    let len = usize::try_from(len).unwrap_or(0);
    if len == passt_core::VIRTIO_NET_HDR_LEN || len == VIRTIO_NET_HDR_V1_LEN {
        len
    } else {
        0
    }
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = fcntl(fd, FcntlArg::F_GETFL)?;
    let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(fl))?;
    Ok(())
}

/// Interface flags by ioctl on `sock` (any socket of the namespace).
fn if_flags(sock: BorrowedFd<'_>, name: &str) -> io::Result<libc::c_short> {
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS fills the flags of one ifreq.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the flags member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_flags })
}

fn ctl_socket() -> io::Result<OwnedFd> {
    Ok(nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Brings interface `name` of the calling thread's namespace up.
pub(crate) fn link_up(name: &str) -> io::Result<()> {
    let s = ctl_socket()?;
    let flags = if_flags(s.as_fd(), name)?;
    let mut ifr = ifreq(name);
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads one ifreq.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The MAC address of interface `name` in the calling thread's namespace.
pub(crate) fn get_mac(name: &str) -> io::Result<[u8; 6]> {
    let s = ctl_socket()?;
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFHWADDR fills the hardware address of one ifreq.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the hwaddr member of the union.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// Sets the MAC address of interface `name` in the calling thread's namespace.
pub(crate) fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut ifr = ifreq(name);
    // SAFETY: writing plain integers into the hwaddr member of the union.
    unsafe {
        ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
    }
    // SAFETY: SIOCSIFHWADDR reads one ifreq.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFHWADDR, &ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `e` (read right after the failed call) after `what`, described as the
/// start-up errors are.
fn failed(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {}", crate::netns::describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns;

    #[test]
    fn ifreq_name_is_truncated_and_terminated() {
        let r = ifreq("a-very-long-interface-name");
        assert_eq!(ifname_of(&r), "a-very-long-int");
        assert_eq!(r.ifr_name[15], 0);
        assert_eq!(ifname_of(&ifreq("tap0")), "tap0");
    }

    /// Needs root: a tap opened with offloads has 12-byte virtio-net
    /// headers and shows the offloads to the namespace; one without has
    /// none; a descriptor of either handed over (`--fd`) is recognised.
    #[test]
    fn tap_with_and_without_offloads() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (tests run as root here)");
        }
        let ns = netns::new_netns_fd().expect("new network namespace");
        netns::in_netns(ns.as_fd(), || {
            let on = TapDevice::open("po0", true).unwrap();
            let off = TapDevice::open("po1", false).unwrap();
            assert_eq!(on.vnet_hdr_len(), VIRTIO_NET_HDR_V1_LEN);
            assert_eq!(on.offload(), LinkOffload::ALL);
            assert_eq!(off.vnet_hdr_len(), 0);
            assert_eq!(off.offload(), LinkOffload::NONE);
            let k = |name: &str| {
                let out = std::process::Command::new("ethtool")
                    .args(["-k", name])
                    .output()
                    .expect("ethtool");
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            assert!(
                k("po0").contains("tcp-segmentation-offload: on"),
                "{}",
                k("po0")
            );
            assert!(
                k("po1").contains("tcp-segmentation-offload: off"),
                "{}",
                k("po1")
            );
            let dup = |t: &TapDevice| t.fd().try_clone_to_owned().unwrap();
            let again = TapDevice::from_fd(dup(&on), "po0".into()).unwrap();
            assert_eq!(again.vnet_hdr_len(), VIRTIO_NET_HDR_V1_LEN);
            let again = TapDevice::from_fd(dup(&off), "po1".into()).unwrap();
            assert_eq!(again.vnet_hdr_len(), 0);
            // Not a tap at all: plain.
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let other = TapDevice::from_fd(a.into(), "x".into()).unwrap();
            assert_eq!(other.vnet_hdr_len(), 0);
        })
        .unwrap();
    }

    /// Needs root: a private network namespace with a tap device in it. A
    /// frame written to the tap reaches the namespace's kernel and its reply
    /// (an ARP request the kernel sends when we ping through the tap) comes
    /// back through `read_batch`.
    #[test]
    fn tap_in_private_namespace() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (tests run as root here)");
        }
        let ns = netns::new_netns_fd().expect("new network namespace");
        let (dev, mac) = netns::in_netns(ns.as_fd(), || {
            let dev = TapDevice::open("pt0", false).unwrap();
            link_up("lo").unwrap();
            set_mac(dev.name(), [0x02, 0, 0, 0, 0, 0x42]).unwrap();
            link_up(dev.name()).unwrap();
            (dev, get_mac("pt0").unwrap())
        })
        .unwrap();
        assert_eq!(dev.name(), "pt0");
        assert_eq!(mac, [0x02, 0, 0, 0, 0, 0x42]);
        // Give the interface an address and make the kernel ARP for a
        // neighbour: the request comes out of the tap.
        let mut dev = dev;
        netns::in_netns(ns.as_fd(), || {
            let st = std::process::Command::new("ip")
                .args(["addr", "add", "192.0.2.1/24", "dev", "pt0"])
                .status()
                .unwrap();
            assert!(st.success());
            let s = std::net::UdpSocket::bind("192.0.2.1:0").unwrap();
            let _ = s.send_to(b"x", "192.0.2.2:9");
        })
        .unwrap();
        let mut rx = RxBuf::new(1 << 20);
        let mut got_arp = false;
        for _ in 0..100 {
            assert_eq!(dev.read_batch(&mut rx), ReadOutcome::Frames);
            let b = passt_core::FrameBatch::new(&rx.buf, &rx.refs);
            for i in 0..b.len() {
                let f = b.frame(i).unwrap();
                if f.get(12..14) == Some(&[0x08, 0x06]) {
                    got_arp = true;
                }
            }
            if got_arp {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(got_arp, "ARP request read from the tap");
        // Writing frames: a valid broadcast frame is taken whole.
        let mut arena = TxArena::new(2);
        let b = arena.next_frame_buf().unwrap();
        b[..60].fill(0);
        b[..6].fill(0xff);
        b[12] = 0x88;
        b[13] = 0xb5;
        arena.commit(60);
        assert_eq!(dev.send(&mut arena), 1);
    }
}

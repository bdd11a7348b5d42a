//! The host's neighbour table, followed for the core (LAN hosts are given
//! to the guest with their real MACs, see `passt_core::Core::handle_neighbour`).
//!
//! A `NETLINK_ROUTE` socket in the host's namespace joins the neighbour
//! group (`RTNLGRP_NEIGH`) before the sandbox goes up; the table as it is
//! then is read with a dump (`RTM_GETNEIGH`) over a request socket of its
//! own, as upstream does, and from then on the event loop reads the
//! `RTM_NEWNEIGH` and `RTM_DELNEIGH` notifications from the group socket,
//! without blocking. Only entries of the template interface of their family
//! count. An entry in a valid state (reachable, stale, delay, probe,
//! permanent, noarp) with an Ethernet address is a neighbour at that
//! address; a deleted entry, or one incomplete or failed, is none. A message
//! that does not parse, or whose address or link-layer address has the
//! wrong length, is dropped and counted ([`NeighWatch::malformed`]); a lost
//! batch of notifications (the socket's buffer overran) is counted too.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use passt_core::Mac;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

/// System calls of the running phase: reading notifications.
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // recv(2) on the group socket.
    SYS_recvfrom,
];

/// `RTMGRP_NEIGH`: the neighbour group as a bind-time group mask.
const RTMGRP_NEIGH: u32 = 1 << 2;
/// `NUD_VALID`: the states of an entry with a usable link-layer address.
const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
/// Receive buffer of the group socket: many events at once (a link going
/// down flushes its whole table).
const RCVBUF: usize = 1 << 20;
/// Most datagrams read per readiness event, so a flood of notifications
/// cannot hold the loop.
const MAX_READS: usize = 64;

/// A change of the host's table, as the core takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighEvent {
    /// The neighbour's address.
    pub addr: IpAddr,
    /// Its MAC, or `None`: no valid entry any more.
    pub mac: Option<Mac>,
}

/// The subscription to the host's neighbour table.
pub struct NeighWatch {
    sock: Socket,
    /// Template interfaces: IPv4, IPv6.
    ifindex: [Option<u32>; 2],
    buf: Vec<u8>,
    /// Messages dropped as malformed.
    pub malformed: u64,
    /// Times notifications were lost (`ENOBUFS`).
    pub overruns: u64,
}

impl std::fmt::Debug for NeighWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeighWatch")
            .field("ifindex", &self.ifindex)
            .field("malformed", &self.malformed)
            .field("overruns", &self.overruns)
            .finish()
    }
}

impl NeighWatch {
    /// Joins the neighbour group in the calling thread's namespace, for
    /// the template interfaces `ifindex4` and `ifindex6`.
    pub fn open(ifindex4: Option<u32>, ifindex6: Option<u32>) -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, RTMGRP_NEIGH))?;
        sock.set_non_blocking(true)?;
        // A larger buffer where allowed; the default otherwise.
        let _ =
            nix::sys::socket::setsockopt(&sock.as_fd(), nix::sys::socket::sockopt::RcvBuf, &RCVBUF);
        Ok(NeighWatch {
            sock,
            ifindex: [ifindex4, ifindex6],
            buf: Vec::with_capacity(1 << 16),
            malformed: 0,
            overruns: 0,
        })
    }

    /// The descriptor the event loop waits on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The table as it is now, both families, as events (a dump over a
    /// request socket of its own).
    pub fn dump(&mut self) -> io::Result<Vec<NeighEvent>> {
        let mut out = Vec::new();
        for (v6, ifindex) in [(false, self.ifindex[0]), (true, self.ifindex[1])] {
            if ifindex.is_none() {
                continue;
            }
            let mut req = NeighbourMessage::default();
            req.header.family = super::family_of(v6);
            let mut nl = super::Nl::new()?;
            for m in nl.dump(RouteNetlinkMessage::GetNeighbour(req))? {
                match self.event_of(&m) {
                    Ok(Some(e)) => out.push(e),
                    Ok(None) => {}
                    Err(()) => self.malformed += 1,
                }
            }
        }
        Ok(out)
    }

    /// Reads the notifications that arrived, without blocking, and hands
    /// each event to `f`.
    pub fn read(&mut self, mut f: impl FnMut(NeighEvent)) {
        for _ in 0..MAX_READS {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Ok(0) => return,
                Ok(n) => {
                    let data = std::mem::take(&mut self.buf);
                    let got = data.get(..n).unwrap_or(&data[..]);
                    self.datagram(got, &mut f);
                    self.buf = data;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.overruns += 1;
                    log::warn!("netlink: neighbour notifications lost (buffer overrun)");
                }
                Err(e) => {
                    log::debug!("netlink: neighbour notifications: {e}");
                    return;
                }
            }
        }
    }

    /// The events of one datagram of notifications.
    pub(crate) fn datagram(&mut self, data: &[u8], f: &mut impl FnMut(NeighEvent)) {
        for chunk in super::messages(data) {
            let Ok(chunk) = chunk else {
                self.malformed += 1;
                return;
            };
            let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(chunk) {
                Ok(m) => m,
                Err(_) => {
                    self.malformed += 1;
                    continue;
                }
            };
            let NetlinkPayload::InnerMessage(m) = msg.payload else {
                continue;
            };
            match self.event_of(&m) {
                Ok(Some(e)) => f(e),
                Ok(None) => {}
                Err(()) => self.malformed += 1,
            }
        }
    }

    /// The event a message means: `Ok(None)` for one that is not about a
    /// neighbour of a template interface, `Err` for a malformed one.
    fn event_of(&self, m: &RouteNetlinkMessage) -> Result<Option<NeighEvent>, ()> {
        let (n, deleted) = match m {
            RouteNetlinkMessage::NewNeighbour(n) => (n, false),
            RouteNetlinkMessage::DelNeighbour(n) => (n, true),
            _ => return Ok(None),
        };
        let h = &n.header;
        let want = match h.family {
            AddressFamily::Inet => self.ifindex[0],
            AddressFamily::Inet6 => self.ifindex[1],
            _ => return Ok(None),
        };
        if want != Some(h.ifindex) {
            return Ok(None);
        }
        let mut addr = None;
        let mut lladdr = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    addr = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    addr = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::Destination(_) => return Err(()),
                NeighbourAttribute::LinkLayerAddress(l) => lladdr = Some(l.as_slice()),
                _ => {}
            }
        }
        let Some(addr) = addr else { return Ok(None) };
        if (h.family == AddressFamily::Inet) != addr.is_ipv4() {
            return Err(());
        }
        let valid = u16::from(h.state) & NUD_VALID != 0;
        if deleted || !valid {
            return Ok(Some(NeighEvent { addr, mac: None }));
        }
        if h.kind != RouteType::Unicast {
            return Ok(None);
        }
        // An entry without a link-layer address (noarp, a proxy) has no
        // MAC to give.
        let Some(l) = lladdr else { return Ok(None) };
        let mac = <[u8; 6]>::try_from(l).map_err(|_| ())?;
        Ok(Some(NeighEvent {
            addr,
            mac: Some(Mac(mac)),
        }))
    }
}

#[cfg(test)]
mod tests;

//! The host's neighbours as the guest sees them: LAN hosts with their real
//! MAC addresses.
//!
//! Every address the guest resolves is answered by us, and by default with
//! our MAC. As upstream does since 2025, a host on the host's own LAN (an
//! entry of the host's neighbour table on the template interface) appears
//! to the guest with its real MAC instead:
//!
//! * ARP replies and neighbour advertisements for its address carry its MAC;
//! * frames from its address (TCP, UDP, ICMP echo replies, relayed ICMP
//!   errors) have its MAC as Ethernet source;
//! * when an address enters the table with a MAC other than ours, and the
//!   guest has spoken already, it is announced: a gratuitous ARP request
//!   (IPv4) or an unsolicited neighbour advertisement to all nodes (IPv6), so
//!   an entry the guest holds with our MAC changes at once. A changed MAC of
//!   an address already in the table is taken, but not announced (upstream:
//!   a later change is less to be trusted); the guest learns it when it asks
//!   again.
//!
//! The driver follows the host's table and reports each change with
//! [`crate::Core::handle_neighbour`]: an address with its MAC (a valid entry:
//! reachable, stale, delay, probe, permanent, noarp) or without (deleted, or
//! incomplete or failed). A removed address falls back to our MAC.
//!
//! Which addresses qualify: unicast ones (not loopback, unspecified,
//! multicast, broadcast) of an enabled family, other than the guest's own
//! (assigned or seen) and other than the guest-side addresses that stand for
//! the host (the host-loopback and guest-address mappings, and our IPv6
//! link-local address, the source of our NDP messages). So with the default
//! `--map-gw`, the gateway keeps our MAC even when a LAN host has its address;
//! with `--no-map-gw` the gateway is a neighbour like any other.
//!
//! An address without an entry of its own takes the gateway's entry, as
//! upstream does (a frame from beyond the LAN comes through the router), and
//! our MAC if the gateway has none.
//!
//! The table has a fixed capacity ([`NEIGH_CAPACITY`]), allocated when the
//! core is built. Entries are kept sorted by address and found by binary
//! search; an empty table (passt and pasta on a host without neighbours, and
//! every simulation that injects none) costs one comparison per frame. When
//! the table is full a new address is refused and counted
//! ([`NeighStats::refused`]): its frames keep our MAC. Updates and removals of
//! present addresses always apply.

use crate::config::Config;
use crate::guest::GuestInfo;
use crate::mac::Mac;
use crate::nat::is_unicast;
use core::net::IpAddr;

/// Most addresses the table holds (upstream: 512).
pub const NEIGH_CAPACITY: usize = 512;

/// What the neighbour table did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighStats {
    /// Addresses that entered the table.
    pub added: u64,
    /// Entries whose MAC changed.
    pub changed: u64,
    /// Entries removed.
    pub removed: u64,
    /// Events about addresses that do not qualify (see the module docs), or
    /// with a multicast or zero MAC.
    pub ignored: u64,
    /// New addresses refused because the table was full.
    pub refused: u64,
    /// Announcements queued for the guest (gratuitous ARP, unsolicited NA).
    pub announced: u64,
    /// Entries now in the table.
    pub entries: usize,
}

/// An address that entered the table, to announce to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Announce {
    pub(crate) addr: IpAddr,
    pub(crate) mac: Mac,
}

/// Address → MAC of the host's LAN neighbours (see the module docs).
#[derive(Debug)]
pub(crate) struct NeighTable {
    /// Sorted by address; never longer than `cap`.
    entries: Vec<(IpAddr, Mac)>,
    cap: usize,
    /// The entries of the gateways, IPv4 and IPv6: the fallback of
    /// addresses without one.
    gw: [Option<Mac>; 2],
    pub(crate) stats: NeighStats,
}

impl Default for NeighTable {
    fn default() -> Self {
        Self::new(NEIGH_CAPACITY)
    }
}

impl NeighTable {
    /// An empty table for at most `cap` addresses, allocated here.
    pub(crate) fn new(cap: usize) -> Self {
        NeighTable {
            entries: Vec::with_capacity(cap),
            cap,
            gw: [None; 2],
            stats: NeighStats::default(),
        }
    }

    /// The MAC recorded for `addr` itself.
    pub(crate) fn get(&self, addr: IpAddr) -> Option<Mac> {
        let i = self.entries.binary_search_by(|e| e.0.cmp(&addr)).ok()?;
        self.entries.get(i).map(|e| e.1)
    }

    /// The MAC the guest sees for `addr`: its own entry, else the gateway's
    /// of its family, else ours. The source of frames from `addr` and the
    /// answer to the guest's ARP requests and neighbour solicitations.
    pub(crate) fn mac_of(&self, cfg: &Config, addr: IpAddr) -> Mac {
        if self.entries.is_empty() {
            return cfg.our_mac;
        }
        let addr = addr.to_canonical();
        self.get(addr)
            .or(self.gw[usize::from(addr.is_ipv6())])
            .unwrap_or(cfg.our_mac)
    }

    /// Applies a change of the host's table: `addr` now has `mac`, or
    /// (`None`) no valid entry. Returns the entry to announce, if `addr`
    /// entered the table with a MAC other than ours.
    pub(crate) fn update(
        &mut self,
        cfg: &Config,
        guest: &GuestInfo,
        addr: IpAddr,
        mac: Option<Mac>,
    ) -> Option<Announce> {
        let addr = addr.to_canonical();
        if !qualifies(cfg, guest, addr)
            || mac.is_some_and(|m| m.is_multicast() || m == Mac::default())
        {
            self.stats.ignored += 1;
            return None;
        }
        let found = self.entries.binary_search_by(|e| e.0.cmp(&addr));
        let announce = match (found, mac) {
            (Ok(i), Some(m)) => {
                let e = self.entries.get_mut(i)?;
                if e.1 != m {
                    e.1 = m;
                    self.stats.changed += 1;
                }
                None
            }
            (Ok(i), None) => {
                self.entries.remove(i);
                self.stats.removed += 1;
                None
            }
            (Err(_), None) => None,
            (Err(_), Some(_)) if self.entries.len() >= self.cap => {
                self.stats.refused += 1;
                None
            }
            (Err(i), Some(m)) => {
                self.entries.insert(i, (addr, m));
                self.stats.added += 1;
                (m != cfg.our_mac).then_some(Announce { addr, mac: m })
            }
        };
        self.stats.entries = self.entries.len();
        self.gw = [
            cfg.ip4.as_ref().and_then(|c| c.gateway).map(IpAddr::V4),
            cfg.ip6.as_ref().and_then(|c| c.gateway).map(IpAddr::V6),
        ]
        .map(|g| g.and_then(|g| self.get(g)));
        announce
    }

    /// Entries in the table.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Whether `addr` (canonical) may enter the table: see the module docs.
fn qualifies(cfg: &Config, guest: &GuestInfo, addr: IpAddr) -> bool {
    if !is_unicast(addr) {
        return false;
    }
    match addr {
        IpAddr::V4(a) => cfg.ip4.as_ref().is_some_and(|c| {
            a != c.addr
                && Some(a) != guest.ip4_seen
                && Some(a) != c.map_host_loopback
                && Some(a) != c.map_guest_addr
        }),
        IpAddr::V6(a) => cfg.ip6.as_ref().is_some_and(|c| {
            a != c.addr
                && a != c.our_ll
                && Some(a) != guest.ip6_seen
                && Some(a) != guest.ip6_ll_seen
                && Some(a) != c.map_host_loopback
                && Some(a) != c.map_guest_addr
        }),
    }
}

#[cfg(test)]
mod tests;

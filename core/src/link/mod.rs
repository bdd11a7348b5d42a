//! Link services: the ARP and NDP proxies and the DHCP and DHCPv6 servers.
//!
//! They answer the guest at once with control frames from the frame queue.
//! Each owns its state (only NDP has any: the router advertisement timer) and
//! sees nothing of the core but the [`Ctx`] the engine lends it for one
//! message. Their messages are parsed and written in `wire/`. ARP and NDP
//! also announce the host's LAN neighbours (`neigh.rs`) as they appear.

pub(crate) mod arp;
pub(crate) mod dhcp;
pub(crate) mod dhcpv6;
pub(crate) mod ndp;

use crate::config::Config;
use crate::counters::Counters;
use crate::guest::GuestInfo;
use crate::neigh::NeighTable;
use crate::queue::{FrameOut, FrameQueue};
use crate::rng::Rng;

/// What a link service may touch while it handles a message or a timer.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a Config,
    /// The host's LAN neighbours: the MAC given for their addresses.
    pub(crate) neigh: &'a NeighTable,
    /// The guest's MAC and addresses (DHCPv6 notes the address it hands out).
    pub(crate) guest: &'a mut GuestInfo,
    /// Replies to the guest.
    pub(crate) out: &'a mut FrameQueue,
    pub(crate) counters: &'a mut Counters,
    /// Timer jitter (router advertisements).
    pub(crate) rng: &'a mut Rng,
}

impl Ctx<'_> {
    /// The frame writer over this context's queue.
    pub(crate) fn tx(&mut self) -> FrameOut<'_> {
        FrameOut::new(self.out, self.counters, self.cfg)
    }
}

//! Neighbour discovery: neighbour and router advertisements.

use crate::counters::DropReason;
use crate::engine::Core;
use crate::tap::{EthHdr, IpHdr};
use crate::time::Instant;

impl Core {
    pub(crate) fn ndp_input(&mut self, now: Instant, eth: &EthHdr, ip: &IpHdr, icmp: &[u8]) {
        let _ = (now, eth, ip, icmp);
        self.counters.drop(DropReason::NotTranslated);
    }

    /// The first frame from the guest arrived: schedule router advertisements.
    pub(crate) fn ndp_guest_seen(&mut self, now: Instant) {
        let _ = now;
    }

    /// Sends an unsolicited router advertisement when due.
    pub(crate) fn ndp_timer(&mut self, now: Instant) {
        let _ = now;
    }
}

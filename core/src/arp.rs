//! ARP proxy.

use crate::counters::DropReason;
use crate::engine::Core;
use crate::tap::EthHdr;
use crate::time::Instant;

impl Core {
    pub(crate) fn arp_input(&mut self, now: Instant, eth: &EthHdr, arp: &[u8]) {
        let _ = (now, eth, arp);
        self.counters.drop(DropReason::NotTranslated);
    }
}

//! DHCPv6 server.

use crate::counters::DropReason;
use crate::engine::Core;
use crate::tap::{EthHdr, IpHdr};
use crate::time::Instant;

impl Core {
    pub(crate) fn dhcpv6_input(
        &mut self,
        now: Instant,
        eth: &EthHdr,
        ip: &IpHdr,
        sport: u16,
        msg: &[u8],
    ) {
        let _ = (now, eth, ip, sport, msg);
        self.counters.drop(DropReason::NotTranslated);
    }
}

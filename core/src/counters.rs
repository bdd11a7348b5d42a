//! Counters of what the core did and, above all, of what it dropped and why.

use core::fmt;

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Number of variants.
            pub const COUNT: usize = Self::ALL.len();
            /// A short stable name, for logs and snapshots.
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

reasons! {
    /// Why a frame from the guest was dropped.
    DropReason {
        /// A batch descriptor pointed outside the batch buffer.
        BadDescriptor => "bad_descriptor",
        /// More frames in one batch than `Limits::batch_frames`.
        BatchFull => "batch_full",
        /// Shorter than an Ethernet header.
        EthTruncated => "eth_truncated",
        /// Neither ARP, IPv4 nor IPv6.
        UnknownEthertype => "unknown_ethertype",
        /// IPv4 or ARP while IPv4 is disabled.
        Ipv4Disabled => "ipv4_disabled",
        /// IPv6 while IPv6 is disabled.
        Ipv6Disabled => "ipv6_disabled",
        /// ARP that is not Ethernet/IPv4 or is truncated.
        ArpMalformed => "arp_malformed",
        /// IPv4 version or header length invalid.
        Ipv4BadHeader => "ipv4_bad_header",
        /// IPv4 total length shorter than the header or longer than the frame.
        Ipv4BadLength => "ipv4_bad_length",
        /// IPv4 fragment (not reassembled, as upstream).
        Ipv4Fragment => "ipv4_fragment",
        /// IPv6 version wrong or header truncated.
        Ipv6BadHeader => "ipv6_bad_header",
        /// IPv6 payload length longer than the frame (or a jumbogram).
        Ipv6BadLength => "ipv6_bad_length",
        /// IPv6 extension header chain truncated, or "no next header".
        Ipv6BadExtension => "ipv6_bad_extension",
        /// IPv6 fragment (not reassembled).
        Ipv6Fragment => "ipv6_fragment",
        /// Loopback source or destination address from the guest.
        Loopback => "loopback",
        /// L4 header truncated or with inconsistent lengths.
        L4Truncated => "l4_truncated",
        /// A TCP segment other than a SYN for no known connection.
        TcpNoFlow => "tcp_no_flow",
        /// A TCP segment with flags or numbers that make no sense in its state
        /// (SYN+FIN, ACK of unsent data, unexpected handshake segment).
        TcpBadSegment => "tcp_bad_segment",
        /// A flow whose endpoints cannot be used (port 0, multicast,
        /// broadcast or unspecified address, unmappable peer).
        TcpBadEndpoint => "tcp_bad_endpoint",
        /// A UDP datagram or echo request whose endpoints cannot be used, or
        /// a datagram from a host peer that is not the flow's.
        DgramBadEndpoint => "dgram_bad_endpoint",
        /// A datagram or echo request lost because its socket could not be
        /// opened, bound or written to.
        DgramSocketFailed => "dgram_socket_failed",
        /// A datagram from the host too large for the buffer, or an echo
        /// reply that does not parse.
        DgramMalformed => "dgram_malformed",
        /// An ICMP/ICMPv6 message from the guest other than an echo request.
        IcmpNotEcho => "icmp_not_echo",
        /// A new flow refused because the flow table is full.
        FlowTableFull => "flow_table_full",
        /// An IP protocol we do not translate (e.g. SCTP, IGMP).
        UnsupportedProtocol => "unsupported_protocol",
        /// The protocol is switched off (`--no-tcp`, `--no-udp`, `--no-icmp`).
        ProtocolDisabled => "protocol_disabled",
        /// A protocol whose translation is not built yet (TCP, UDP, ICMP echo).
        NotTranslated => "not_translated",
        /// An ARP/NDP/DHCP/DHCPv6 message that does not parse.
        ServiceMalformed => "service_malformed",
        /// A well-formed service message we do not answer (e.g. DHCP RELEASE,
        /// gratuitous ARP, ARP for the guest's own address).
        ServiceIgnored => "service_ignored",
        /// No room left in the outgoing control-frame queue.
        OutQueueFull => "out_queue_full",
        /// A queued frame was larger than the buffer the driver lent.
        OutFrameTooLarge => "out_frame_too_large",
        /// Work refused because the action queue was three quarters full
        /// (`Limits::actions`): a guest segment or datagram (the segments of
        /// a flow's sequence), an echo request, a datagram from a new host
        /// peer.
        ActionQueueFull => "action_queue_full",
        /// A new flow refused because its protocol holds its share of the
        /// flow table already (`Limits::tcp_flows`, `udp_flows`,
        /// `ping_flows`).
        FlowQuota => "flow_quota",
        /// A virtio-net header in front of a frame that the core does not
        /// know (UDP segmentation, unknown flags) or that does not fit the
        /// frame (see `FrameBatch::with_virtio_hdr`).
        BadOffload => "bad_offload",
    }
}

reasons! {
    /// Replies and other frames the core generated, by kind.
    ReplyKind {
        /// ARP reply.
        Arp => "arp_reply",
        /// Neighbour advertisement.
        NeighborAdvert => "ndp_na",
        /// Router advertisement, solicited or not.
        RouterAdvert => "ndp_ra",
        /// DHCP OFFER/ACK/BOOTP reply.
        Dhcp => "dhcp_reply",
        /// DHCPv6 ADVERTISE/REPLY.
        Dhcpv6 => "dhcpv6_reply",
    }
}

/// Counters readable through [`Core::counters`](crate::Core::counters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Frames handed in by the driver.
    pub frames_in: u64,
    /// Frames handed out to the driver.
    pub frames_out: u64,
    /// Transport segments grouped into per-flow sequences.
    pub l4_segments: u64,
    /// Per-flow sequences formed from batches.
    pub l4_sequences: u64,
    /// Actions dropped because the action queue was full (work already
    /// under way; new work is refused earlier, as
    /// [`DropReason::ActionQueueFull`]).
    pub actions_refused: u64,
    /// Datagrams from host sockets read and dropped because the guest link
    /// had no room at all (left in the socket, they would keep it readable
    /// and the loop busy until the link had room).
    pub link_full_dropped: u64,
    /// Frames from the guest that stood for several TCP segments (GSO
    /// metadata in their virtio-net header).
    pub gso_frames_in: u64,
    /// Frames to the guest that stand for several TCP segments (handed to
    /// a ring that takes TSO).
    pub gso_frames_out: u64,
    drops: [u64; DropReason::COUNT],
    replies: [u64; ReplyKind::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            frames_in: 0,
            frames_out: 0,
            l4_segments: 0,
            l4_sequences: 0,
            actions_refused: 0,
            link_full_dropped: 0,
            gso_frames_in: 0,
            gso_frames_out: 0,
            drops: [0; DropReason::COUNT],
            replies: [0; ReplyKind::COUNT],
        }
    }
}

impl Counters {
    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Frames dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Replies of `kind` generated.
    pub fn replies(&self, kind: ReplyKind) -> u64 {
        self.replies[kind as usize]
    }

    /// Non-zero drop counters, in declaration order.
    pub fn drop_reasons(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.dropped(r)))
            .filter(|&(_, n)| n != 0)
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        let c = &mut self.drops[reason as usize];
        *c = c.saturating_add(1);
        log::trace!("drop: {reason}");
    }

    pub(crate) fn reply(&mut self, kind: ReplyKind) {
        let c = &mut self.replies[kind as usize];
        *c = c.saturating_add(1);
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames_in={} frames_out={} l4_segments={} l4_sequences={}",
            self.frames_in, self.frames_out, self.l4_segments, self.l4_sequences
        )?;
        for &k in ReplyKind::ALL {
            if self.replies(k) != 0 {
                write!(f, " {}={}", k, self.replies(k))?;
            }
        }
        for (r, n) in self.drop_reasons() {
            write!(f, " drop.{r}={n}")?;
        }
        if self.actions_refused != 0 {
            write!(f, " actions_refused={}", self.actions_refused)?;
        }
        if self.link_full_dropped != 0 {
            write!(f, " link_full_dropped={}", self.link_full_dropped)?;
        }
        if self.gso_frames_in != 0 || self.gso_frames_out != 0 {
            write!(
                f,
                " gso_frames_in={} gso_frames_out={}",
                self.gso_frames_in, self.gso_frames_out
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_and_display() {
        let mut c = Counters::default();
        c.drop(DropReason::Loopback);
        c.drop(DropReason::Loopback);
        c.reply(ReplyKind::Arp);
        assert_eq!(c.dropped(DropReason::Loopback), 2);
        assert_eq!(c.dropped_total(), 2);
        assert_eq!(c.replies(ReplyKind::Arp), 1);
        assert_eq!(
            c.to_string(),
            "frames_in=0 frames_out=0 l4_segments=0 l4_sequences=0 arp_reply=1 drop.loopback=2"
        );
        assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
        assert_eq!(
            DropReason::ALL[DropReason::OutQueueFull as usize],
            DropReason::OutQueueFull
        );
    }
}

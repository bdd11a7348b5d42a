//! Configuration of a [`Core`](crate::Core): addresses, services, secrets.
//!
//! The driver builds a `Config` once at start-up (from the command line, the
//! host's interfaces and `/etc/resolv.conf`); the core never looks anything up
//! itself. Everything random the core does derives from [`Config::seed`] and
//! [`Config::secret`], so two runs with the same configuration and inputs behave
//! identically.

use crate::action::Netns;
use crate::mac::Mac;
use crate::policy::TcpPolicy;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Upstream's default MTU: `ROUND_DOWN(65535 - 14, 4)`.
pub const DEFAULT_MTU: u16 = 65520;
/// Smallest MTU that may be configured (`ETH_MIN_MTU`).
pub const MIN_MTU: u16 = 68;
/// Most resolvers advertised per family (`MAXNS`).
pub const MAX_DNS: usize = 3;
/// Most search domains advertised (`MAXDNSRCH`).
pub const MAX_SEARCH: usize = 6;

/// IPv4 side of the guest link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ip4Config {
    /// Address assigned to the guest (DHCP `yiaddr`); by default the host's own.
    pub addr: Ipv4Addr,
    /// Prefix length of [`Self::addr`] (DHCP option 1).
    pub prefix_len: u8,
    /// Router advertised to the guest (DHCP option 3), if any.
    pub gateway: Option<Ipv4Addr>,
    /// Our own address on the link: source of DHCP replies (option 54) and of
    /// traffic from host peers the guest cannot reach. Usually the gateway.
    pub our_addr: Option<Ipv4Addr>,
    /// Resolvers advertised (DHCP option 6), at most [`MAX_DNS`].
    pub dns: heapless::Vec<Ipv4Addr, MAX_DNS>,
    /// Guest-side address whose port 53/853 traffic goes to [`Self::dns_host`].
    pub dns_match: Option<Ipv4Addr>,
    /// Host-side resolver for DNS forwarding.
    pub dns_host: Option<Ipv4Addr>,
    /// Guest-side address translated to the host's 127.0.0.1.
    pub map_host_loopback: Option<Ipv4Addr>,
    /// Guest-side address translated to the guest's assigned address on the host.
    pub map_guest_addr: Option<Ipv4Addr>,
}

impl Ip4Config {
    /// A configuration with only an address, a prefix and a gateway; the gateway
    /// doubles as our address and as the host-loopback mapping, as upstream does.
    pub fn new(addr: Ipv4Addr, prefix_len: u8, gateway: Option<Ipv4Addr>) -> Self {
        Ip4Config {
            addr,
            prefix_len,
            gateway,
            our_addr: gateway,
            dns: heapless::Vec::new(),
            dns_match: None,
            dns_host: None,
            map_host_loopback: gateway,
            map_guest_addr: None,
        }
    }

    /// The netmask for [`Self::prefix_len`].
    pub fn netmask(&self) -> Ipv4Addr {
        let p = u32::from(self.prefix_len.min(32));
        Ipv4Addr::from(u32::MAX.checked_shl(32 - p).unwrap_or(0))
    }

    /// Whether `a` lies in the guest's subnet.
    pub fn on_link(&self, a: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask());
        u32::from(a) & m == u32::from(self.addr) & m
    }
}

/// IPv6 side of the guest link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ip6Config {
    /// Global address assigned to the guest (DHCPv6 IA_NA, RA prefix base).
    /// Unspecified in local mode, where the guest's own link-local is used.
    pub addr: Ipv6Addr,
    /// Prefix length advertised in router advertisements (upstream: always 64).
    pub prefix_len: u8,
    /// Router advertised to the guest, if any.
    pub gateway: Option<Ipv6Addr>,
    /// Resolvers advertised (RDNSS, DHCPv6 option 23), at most [`MAX_DNS`].
    pub dns: heapless::Vec<Ipv6Addr, MAX_DNS>,
    /// Guest-side address whose port 53/853 traffic goes to [`Self::dns_host`].
    pub dns_match: Option<Ipv6Addr>,
    /// Host-side resolver for DNS forwarding.
    pub dns_host: Option<Ipv6Addr>,
    /// Our link-local address: source of NDP and DHCPv6 messages.
    pub our_ll: Ipv6Addr,
    /// Guest-side address translated to the host's ::1.
    pub map_host_loopback: Option<Ipv6Addr>,
    /// Guest-side address translated to the guest's assigned address on the host.
    pub map_guest_addr: Option<Ipv6Addr>,
}

impl Ip6Config {
    /// A configuration with an address, a gateway and our link-local address.
    pub fn new(addr: Ipv6Addr, gateway: Option<Ipv6Addr>, our_ll: Ipv6Addr) -> Self {
        Ip6Config {
            addr,
            prefix_len: 64,
            gateway,
            our_ll,
            dns: heapless::Vec::new(),
            dns_match: None,
            dns_host: None,
            map_host_loopback: gateway,
            map_guest_addr: None,
        }
    }
}

/// Switches for the built-in services and protocols (all on by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)]
pub struct Features {
    /// Answer DHCP (off: `--no-dhcp`).
    pub dhcp: bool,
    /// Answer NDP (off: `--no-ndp`, which also stops router advertisements).
    pub ndp: bool,
    /// Answer DHCPv6 (off: `--no-dhcpv6`).
    pub dhcpv6: bool,
    /// Send router advertisements (off: `--no-ra`, implied by `--config-net`).
    pub ra: bool,
    /// Advertise resolvers (DHCP 6, RDNSS, DHCPv6 23).
    pub advertise_dns: bool,
    /// Advertise the search list (DHCP 119, DNSSL, DHCPv6 24).
    pub advertise_search: bool,
    /// Translate TCP (off: `--no-tcp`).
    pub tcp: bool,
    /// Translate UDP (off: `--no-udp`).
    pub udp: bool,
    /// Translate ICMP echo and answer ICMPv6 at all (off: `--no-icmp`).
    pub icmp: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            dhcp: true,
            ndp: true,
            dhcpv6: true,
            ra: true,
            advertise_dns: true,
            advertise_search: true,
            tcp: true,
            udp: true,
            icmp: true,
        }
    }
}

/// Fixed capacities, allocated once when the core is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most frames the core looks at in one batch; more are dropped and counted.
    pub batch_frames: usize,
    /// Bytes reserved for queued control frames (ARP/NDP/DHCP replies, ACKs).
    pub out_queue_bytes: usize,
    /// Most control frames queued at once.
    pub out_queue_frames: usize,
    /// Most actions queued at once (at least 64), allocated once. New work
    /// (a flow's sequence of guest segments, a new datagram flow, an accept)
    /// starts only while a quarter of the queue is free, and is otherwise
    /// refused: counted as [`DropReason::ActionQueueFull`](crate::DropReason)
    /// (guests send TCP segments again; listeners are level-triggered and
    /// report readiness again). Listeners of a large set of forwards open as
    /// the driver drains the queue. An action that still finds the queue
    /// full is dropped and counted in
    /// [`Counters::actions_refused`](crate::Counters::actions_refused).
    pub actions: usize,
    /// Capacity of the flow table.
    pub flows: usize,
    /// Most TCP connections in the flow table (handshakes included): the
    /// rest of the table stays for UDP and echo under a SYN flood.
    pub tcp_flows: usize,
    /// Most UDP flows in the flow table: a guest sending to many ports (or
    /// from many) leaves room for TCP and echo.
    pub udp_flows: usize,
    /// Most ICMP/ICMPv6 echo flows in the flow table.
    pub ping_flows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_frames: 16384,
            out_queue_bytes: 1 << 20,
            out_queue_frames: 4096,
            actions: 8192,
            flows: 4096,
            tcp_flows: 3584,
            udp_flows: 3072,
            ping_flows: 512,
        }
    }
}

/// The transport protocol of a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP: listening sockets, accepted connections.
    Tcp,
    /// UDP: bound sockets, a flow per host peer.
    Udp,
}

impl core::fmt::Display for Proto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

impl Proto {
    pub(crate) fn index(self) -> usize {
        match self {
            Proto::Tcp => 0,
            Proto::Udp => 1,
        }
    }
}

/// Host ports forwarded to the guest: `first..=last` on `addr` (and
/// `ifindex`), delivered to `target_port` and up on the guest side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Forward {
    /// TCP or UDP.
    pub proto: Proto,
    /// Address to listen on; `None` listens on every address of both
    /// families (one dual-stack socket, or IPv4 only if IPv6 is disabled).
    pub addr: Option<IpAddr>,
    /// Interface to bind the listeners, and the sockets of flows from them,
    /// to (`SO_BINDTODEVICE`), by index: the core cannot look names up.
    pub ifindex: Option<u32>,
    /// First port listened on.
    pub first: u16,
    /// Last port listened on (inclusive).
    pub last: u16,
    /// Guest-side address connections and datagrams go to; `None`: the
    /// guest's address, as the address mapping picks it for each peer. A
    /// peer whose mapped source is of the other family is refused.
    pub target: Option<IpAddr>,
    /// Guest port of `first`; the range keeps its length (wrapping).
    pub target_port: u16,
    /// Where the listeners live: [`Netns::Host`] for ports forwarded to
    /// the guest (`-t`, `-u`); [`Netns::Guest`] for ports of the guest's
    /// loopback forwarded to the host's (pasta's `-T`, `-U`), whose
    /// connections are always spliced to the same loopback address on the
    /// host (the target address is ignored).
    pub netns: Netns,
}

impl Forward {
    /// Port `port` of every address, to guest port `target_port`.
    pub fn new(proto: Proto, port: u16, target_port: u16) -> Self {
        Forward {
            proto,
            addr: None,
            ifindex: None,
            first: port,
            last: port,
            target: None,
            target_port,
            netns: Netns::Host,
        }
    }

    /// The guest port for `port`, if `port` is in the range.
    pub fn target_of(&self, port: u16) -> Option<u16> {
        (self.first..=self.last)
            .contains(&port)
            .then(|| self.target_port.wrapping_add(port - self.first))
    }

    /// This forward restricted to `port` (which it forwards).
    pub(crate) fn single(&self, port: u16) -> Forward {
        Forward {
            first: port,
            last: port,
            target_port: self.target_of(port).unwrap_or(self.target_port),
            ..*self
        }
    }
}

/// Everything a [`Core`](crate::Core) needs to know, fixed for its lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Our MAC on the guest link (`-M`).
    pub our_mac: Mac,
    /// The guest's MAC if known in advance (pasta reads it from the namespace);
    /// otherwise frames go to broadcast until the guest sends something.
    pub guest_mac: Option<Mac>,
    /// MTU advertised to the guest (`-m`); `None` advertises nothing (`-m 0`).
    pub mtu: Option<u16>,
    /// IPv4 settings; `None` disables IPv4 (and ARP) entirely.
    pub ip4: Option<Ip4Config>,
    /// IPv6 settings; `None` disables IPv6 entirely.
    pub ip6: Option<Ip6Config>,
    /// DNS search list, at most [`MAX_SEARCH`] domains.
    pub search: Vec<String>,
    /// Host name for the guest (`-H`; DHCP option 12).
    pub hostname: Option<String>,
    /// Fully qualified domain name for the guest (`--fqdn`; DHCP option 81,
    /// DHCPv6 option 39).
    pub fqdn: Option<String>,
    /// Service and protocol switches.
    pub features: Features,
    /// Key for hashing flows and for TCP initial sequence numbers (RFC 6528).
    pub secret: [u8; 16],
    /// Seed of the core's pseudo-random generator (timer jitter).
    pub seed: u64,
    /// Time field of our DHCPv6 DUID-LLT: seconds since 2000-01-01 at start-up.
    pub duid_time: u32,
    /// Fixed capacities.
    pub limits: Limits,
    /// Host ports forwarded to the guest (`-t`, `-u`): their listeners open
    /// at [`Core::start`](crate::Core::start).
    pub forwards: Vec<Forward>,
    /// Bind listeners and UDP sockets with `IP_FREEBIND`/`IPV6_FREEBIND`
    /// (`--freebind`): forwarded addresses need not be configured on the
    /// host yet.
    pub freebind: bool,
    /// The host kernel supports `SO_PEEK_OFF` on TCP sockets (probed by the
    /// driver): peeks then skip nothing and the core sets the offset per socket.
    pub peek_offset: bool,
    /// What the guest link does for the core's frames (set by the driver
    /// once it opened the link; a tap device with virtio-net headers takes
    /// partial checksums and TCP segmentation): TCP data then goes out in
    /// segments of up to 64 KiB with [`FrameMeta`](crate::FrameMeta), handed
    /// over with [`TxRing::commit_meta`](crate::TxRing::commit_meta).
    /// [`LinkOffload::NONE`](crate::LinkOffload::NONE) (the default) leaves every frame as it was.
    pub link_offload: crate::LinkOffload,
    /// TCP translation's window sizing and reopening, ACK timing and
    /// retransmission back-off; the default is what the drivers ship.
    pub tcp: TcpPolicy,
    /// Splice TCP connections and UDP flows between the host's and the
    /// guest's loopback (pasta, unless `--no-splice`): a connection or
    /// datagram to a forwarded port from a loopback address of the host,
    /// and every one to a [`Netns::Guest`] listener, is joined in the
    /// driver to a socket in the other namespace
    /// ([`Action::Splice`](crate::Action::Splice),
    /// [`Action::SpliceDatagrams`](crate::Action::SpliceDatagrams)) instead
    /// of going through the guest link.
    pub splice: bool,
    /// There is no guest link (pasta's `--splice-only`): UDP datagrams on
    /// forwarded ports that would take it are discarded.
    pub splice_only: bool,
    /// Spliced connections to a forwarded port that arrived on a loopback
    /// address go to that loopback address in the guest's namespace
    /// (`--host-lo-to-ns-lo`); otherwise to the guest's own address, so
    /// that services listening only on the guest's loopback stay private.
    pub host_lo_to_ns_lo: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            our_mac: Mac::OUR_DEFAULT,
            guest_mac: None,
            mtu: Some(DEFAULT_MTU),
            ip4: None,
            ip6: None,
            search: Vec::new(),
            hostname: None,
            fqdn: None,
            features: Features::default(),
            secret: [0; 16],
            seed: 0,
            duid_time: 0,
            limits: Limits::default(),
            forwards: Vec::new(),
            freebind: false,
            peek_offset: false,
            link_offload: crate::LinkOffload::NONE,
            tcp: TcpPolicy::SHIPPED,
            splice: false,
            splice_only: false,
            host_lo_to_ns_lo: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_and_on_link() {
        let c = Ip4Config::new(
            Ipv4Addr::new(10, 77, 0, 2),
            24,
            Some(Ipv4Addr::new(10, 77, 0, 1)),
        );
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(c.on_link(Ipv4Addr::new(10, 77, 0, 1)));
        assert!(!c.on_link(Ipv4Addr::new(10, 77, 1, 1)));
        let mut z = c.clone();
        z.prefix_len = 0;
        assert_eq!(z.netmask(), Ipv4Addr::UNSPECIFIED);
        z.prefix_len = 32;
        assert_eq!(z.netmask(), Ipv4Addr::BROADCAST);
        z.prefix_len = 200;
        assert_eq!(z.netmask(), Ipv4Addr::BROADCAST);
    }
}

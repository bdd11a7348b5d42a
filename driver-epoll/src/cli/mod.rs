//! The command line of `passt` and `pasta`.
//!
//! Both programs share one option table; options that belong to the other mode
//! are refused with an error naming them, and hidden from the help. Repeated
//! options override earlier ones ("last one wins"), except the repeatable ones
//! (`-t -u -T -U -D -S`, and the per-family `-a -g -o --dns-forward --dns-host
//! --map-host-loopback --map-guest-addr`). Parsing of pasta stops at the first
//! argument that is not an option: that one and everything after it is the
//! command to run (or a PID).

use crate::fwd::{FwdTable, SpecKind, EPHEMERAL_DEFAULT, IFNAME_MAX};
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use passt_core::Mac;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub(crate) mod man;
mod parse;
mod values;

pub use parse::*;
pub use values::*;

/// Which program we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// qemu / libvirt back-end over a UNIX domain socket.
    #[default]
    Passt,
    /// Network namespace through a tap device.
    Pasta,
}

impl Mode {
    /// The program name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Passt => "passt",
            Mode::Pasta => "pasta",
        }
    }
}

/// The mode from the program name: a file name containing "pasta" runs pasta,
/// else one containing "passt" runs passt.
pub fn mode_from_argv0(argv0: &OsStr) -> Option<Mode> {
    let name = std::path::Path::new(argv0).file_name()?.to_string_lossy();
    if name.contains("pasta") {
        Some(Mode::Pasta)
    } else if name.contains("passt") {
        Some(Mode::Passt)
    } else {
        None
    }
}

/// Smallest `--log-size` (five times the larger of BUFSIZ and the page size).
pub const LOG_SIZE_MIN: u64 = 5 * 8192;
/// Default `--log-size`.
pub const LOG_SIZE_DEFAULT: u64 = 1 << 20;
/// Longest UNIX domain socket path (`sun_path` minus the terminator).
pub const SOCKET_PATH_MAX: usize = 107;

/// An address, or `none` to switch the feature off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrOrNone {
    /// `none`.
    None,
    /// An address.
    Addr(IpAddr),
}

/// `-a`: an address, with the prefix length if given as `ADDR/PREFIX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAddr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length after `/`, if any (used for IPv4; IPv6 keeps /64).
    pub prefix: Option<u8>,
}

/// A user or group given by number or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdOrName {
    /// Numeric id.
    Id(u32),
    /// Login or group name, resolved at start-up.
    Name(String),
}

/// `--runas UID|UID:GID|LOGIN|LOGIN:GROUP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user.
    pub user: IdOrName,
    /// The group, if given (else the user's primary group, or the same number).
    pub group: Option<IdOrName>,
}

/// What pasta connects to (from the positional arguments and `--netns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PastaTarget {
    /// Run this command (empty: the user's shell) in new namespaces.
    Spawn(Vec<OsString>),
    /// Join the namespaces of this process.
    Pid(u32),
    /// Join this network namespace file (`--netns`; a bare name is looked up
    /// in `/run/netns`).
    Netns(PathBuf),
}

/// Every option of passt and pasta. Fields are typed; `Vec` fields keep the
/// order given on the command line. Fields are public but for the pasta
/// target's raw arguments, which the rest reads as [`Self::target`].
#[derive(Parser, Clone, Debug, Default, PartialEq, Eq)]
#[command(
    args_override_self = true,
    infer_long_args = true,
    disable_version_flag = true,
    max_term_width = 100,
    after_help = SPEC_HELP
)]
pub struct Options {
    /// Which program parsed these options.
    #[arg(skip)]
    pub mode: Mode,

    /// Print the manual page (man(7) format) and exit
    #[arg(long = "print-manpage", hide = true)]
    pub print_manpage: bool,
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit
    #[arg(long = "print-completions", value_name = "SHELL", hide = true)]
    pub print_completions: Option<clap_complete::Shell>,

    /// Log debug messages too, to standard error with timestamps
    #[arg(short = 'd', long = "debug", overrides_with = "quiet")]
    pub debug: bool,
    /// Log every packet and event as well (implies --debug)
    #[arg(long = "trace", overrides_with = "quiet")]
    pub trace: bool,
    /// Log warnings and errors only
    #[arg(short = 'q', long = "quiet", overrides_with_all = ["debug", "trace"])]
    pub quiet: bool,
    /// Print counts of events by kind on standard error, at most every SECS seconds (foreground only)
    #[arg(long = "stats", value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub stats: Option<u32>,
    /// Stay in the foreground instead of running as a daemon
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// Deprecated, will be dropped soon; does nothing (logging follows --debug and --log-file)
    #[arg(short = 'e', long = "stderr")]
    pub stderr: bool,
    /// Log to this file only (created or truncated)
    #[arg(short = 'l', long = "log-file", value_name = "PATH", value_parser = parse_nonempty_path)]
    pub log_file: Option<PathBuf>,
    /// Largest size of the log file; the oldest part is cut when full [default: 1048576]
    #[arg(long = "log-size", value_name = "BYTES", value_parser = parse_log_size)]
    pub log_size: Option<u64>,
    /// Switch to this user and group (UID, UID:GID, LOGIN or LOGIN:GROUP; never UID 0) [default: the current one; nobody if started as root]
    #[arg(long = "runas", value_name = "UID[:GID]", value_parser = parse_runas)]
    pub runas: Option<RunAs>,
    /// Debugging: let system calls outside the seccomp allowlist through and have the kernel log them, instead of killing the process
    #[arg(long = "seccomp-log")]
    pub seccomp_log: bool,
    /// UNIX domain socket for qemu [default: the first free /tmp/passt_N.socket]
    #[arg(short = 's', long = "socket", visible_alias = "socket-path", value_name = "PATH", value_parser = parse_socket_path)]
    pub socket: Option<PathBuf>,
    /// Speak vhost-user on the socket (qemu: -chardev socket + -netdev vhost-user)
    #[arg(long = "vhost-user")]
    pub vhost_user: bool,
    /// Print the back-end capabilities (JSON) and exit
    #[arg(long = "print-capabilities")]
    pub print_capabilities: bool,
    /// Use this already connected descriptor (0, standard input, or above 2) instead of a socket or tap device; implies --one-off for passt
    #[arg(short = 'F', long = "fd", value_parser = parse_fd)]
    pub fd: Option<i32>,
    /// Exit when the first client disconnects
    #[arg(short = '1', long = "one-off")]
    pub one_off: bool,
    /// Name of the tap interface in the namespace [default: name of the host's template interface, tap0 if none]
    #[arg(short = 'I', long = "ns-ifname", value_name = "NAME", value_parser = parse_ifname)]
    pub ns_ifname: Option<String>,
    /// Capture guest-side frames into this pcap file
    #[arg(short = 'p', long = "pcap", value_name = "FILE", value_parser = parse_nonempty_path)]
    pub pcap: Option<PathBuf>,
    /// Write the process id to this file once running
    #[arg(short = 'P', long = "pid", value_name = "FILE", value_parser = parse_nonempty_path)]
    pub pid_file: Option<PathBuf>,

    /// MTU advertised by DHCP and NDP, 0 to advertise none [default: 65520]
    #[arg(short = 'm', long = "mtu", value_parser = parse_mtu)]
    pub mtu: Option<u16>,
    /// Address given to the guest, once per family, optionally with an IPv4 prefix length (ADDR/PREFIX; IPv6 prefixes stay /64) [default: the host's]
    #[arg(short = 'a', long = "address", value_name = "ADDR[/PREFIX]", action = ArgAction::Append, value_parser = parse_assign_addr)]
    pub address: Vec<GuestAddr>,
    /// IPv4 netmask, as prefix length or dotted quad [default: the host's]
    #[arg(short = 'n', long = "netmask", value_name = "MASK", value_parser = parse_netmask)]
    pub netmask: Option<u8>,
    /// Our MAC address on the guest link [default: 9a:55:9a:55:9a:55]
    #[arg(short = 'M', long = "mac-addr", value_name = "MAC", value_parser = parse_mac)]
    pub mac_addr: Option<Mac>,
    /// Gateway given to the guest, once per family [default: the host's default gateway]
    #[arg(short = 'g', long = "gateway", value_name = "ADDR", action = ArgAction::Append, value_parser = parse_gateway)]
    pub gateway: Vec<IpAddr>,
    /// Host interface whose addresses and routes are used [default: --outbound-if4/6, else the one of the first default route]
    #[arg(short = 'i', long = "interface", value_name = "NAME", value_parser = parse_ifname)]
    pub interface: Option<String>,
    /// Source address of outbound sockets, once per family [default: chosen by the kernel]
    #[arg(short = 'o', long = "outbound", value_name = "ADDR", action = ArgAction::Append, value_parser = parse_outbound)]
    pub outbound: Vec<IpAddr>,
    /// Bind outbound IPv4 sockets to this interface
    #[arg(long = "outbound-if4", value_name = "NAME", value_parser = parse_ifname)]
    pub outbound_if4: Option<String>,
    /// Bind outbound IPv6 sockets to this interface
    #[arg(long = "outbound-if6", value_name = "NAME", value_parser = parse_ifname)]
    pub outbound_if6: Option<String>,
    /// Nameserver to advertise (repeatable, up to 3 per family); 'none' disables DNS [default: from /etc/resolv.conf]
    #[arg(short = 'D', long = "dns", value_name = "ADDR", action = ArgAction::Append, value_parser = parse_dns)]
    pub dns: Vec<AddrOrNone>,
    /// Search domain, or a space-separated list, to advertise (repeatable, up to 6 in all); 'none' disables the list [default: from /etc/resolv.conf]
    #[arg(short = 'S', long = "search", value_name = "DOMAIN", action = ArgAction::Append, value_parser = parse_search)]
    pub search: Vec<String>,
    /// Host name for the guest: DHCP option 12 (pasta: also the hostname of the command's namespace)
    #[arg(short = 'H', long = "hostname", value_name = "NAME", value_parser = parse_dns_name)]
    pub hostname: Option<String>,
    /// Fully qualified domain name for the guest: DHCP option 81 and DHCPv6 option 39
    #[arg(long = "fqdn", value_name = "NAME", value_parser = parse_dns_name)]
    pub fqdn: Option<String>,
    /// Advertise nameservers by DHCP, DHCPv6 and NDP
    #[arg(long = "dhcp-dns")]
    pub dhcp_dns: bool,
    /// Advertise the search list by DHCP, DHCPv6 and NDP
    #[arg(long = "dhcp-search")]
    pub dhcp_search: bool,
    /// Don't advertise nameservers
    #[arg(long = "no-dhcp-dns")]
    pub no_dhcp_dns: bool,
    /// Don't advertise the search list
    #[arg(long = "no-dhcp-search")]
    pub no_dhcp_search: bool,
    /// Redirect DNS (port 53 and 853) sent to ADDR to the host nameserver, once per family
    #[arg(long = "dns-forward", value_name = "ADDR", action = ArgAction::Append, value_parser = parse_dns_forward)]
    pub dns_forward: Vec<IpAddr>,
    /// Host nameserver that --dns-forward traffic goes to, once per family [default: the first of /etc/resolv.conf]
    #[arg(long = "dns-host", value_name = "ADDR", action = ArgAction::Append, value_parser = parse_dns_host)]
    pub dns_host: Vec<IpAddr>,
    /// Don't forward TCP
    #[arg(long = "no-tcp")]
    pub no_tcp: bool,
    /// Don't forward UDP
    #[arg(long = "no-udp")]
    pub no_udp: bool,
    /// Don't forward ICMP and ICMPv6
    #[arg(long = "no-icmp")]
    pub no_icmp: bool,
    /// Don't answer DHCP
    #[arg(long = "no-dhcp")]
    pub no_dhcp: bool,
    /// Don't answer NDP (no router advertisements either)
    #[arg(long = "no-ndp")]
    pub no_ndp: bool,
    /// Don't answer DHCPv6
    #[arg(long = "no-dhcpv6")]
    pub no_dhcpv6: bool,
    /// Don't send router advertisements
    #[arg(long = "no-ra")]
    pub no_ra: bool,
    /// Allow forwarding listeners on addresses not configured yet
    #[arg(long = "freebind")]
    pub freebind: bool,
    /// Guest-side address that reaches the host's loopback, once per family; 'none' disables [default: the gateway]
    #[arg(long = "map-host-loopback", value_name = "ADDR", action = ArgAction::Append, value_parser = parse_map)]
    pub map_host_loopback: Vec<AddrOrNone>,
    /// Don't map the gateway address to the host's loopback
    #[arg(long = "no-map-gw")]
    pub no_map_gw: bool,
    /// Guest-side address that reaches the host's address the guest shadows, once per family
    #[arg(long = "map-guest-addr", value_name = "ADDR", action = ArgAction::Append, value_parser = parse_map)]
    pub map_guest_addr: Vec<AddrOrNone>,
    /// IPv4 only
    #[arg(short = '4', long = "ipv4-only")]
    pub ipv4_only: bool,
    /// IPv6 only
    #[arg(short = '6', long = "ipv6-only")]
    pub ipv6_only: bool,
    /// Forward TCP ports from the host to the guest (repeatable; see SPEC below)
    #[arg(short = 't', long = "tcp-ports", value_name = "SPEC", action = ArgAction::Append)]
    pub tcp_ports: Vec<String>,
    /// Forward UDP ports from the host to the guest (repeatable; see SPEC below)
    #[arg(short = 'u', long = "udp-ports", value_name = "SPEC", action = ArgAction::Append)]
    pub udp_ports: Vec<String>,
    /// Forward TCP ports from the namespace's loopback to the host's: listeners on the
    /// namespace's `lo`, connections spliced to the same loopback address on the host
    /// (repeatable; see SPEC below; `auto`: the host's listening ports) [default: auto]
    #[arg(short = 'T', long = "tcp-ns", value_name = "SPEC", action = ArgAction::Append)]
    pub tcp_ns: Vec<String>,
    /// Forward UDP ports from the namespace's loopback to the host's: sockets on the
    /// namespace's `lo`, datagrams spliced to the same loopback address on the host, the
    /// source port kept (repeatable; see SPEC below; `auto`: the host's bound ports) [default: auto]
    #[arg(short = 'U', long = "udp-ns", value_name = "SPEC", action = ArgAction::Append)]
    pub udp_ns: Vec<String>,
    /// Spliced connections from the host's loopback go to the same loopback address in the
    /// namespace, instead of the namespace's own address (which keeps services listening
    /// only on the namespace's loopback private)
    #[arg(long = "host-lo-to-ns-lo")]
    pub host_lo_to_ns_lo: bool,
    /// User namespace to join (with --netns or a PID)
    #[arg(long = "userns", value_name = "PATH", value_parser = parse_nonempty_path)]
    pub userns: Option<PathBuf>,
    /// Network namespace to join, a path or a name in /run/netns
    #[arg(long = "netns", value_name = "PATH|NAME", value_parser = parse_nonempty_path)]
    netns: Option<PathBuf>,
    /// Don't join or create a user namespace
    #[arg(long = "netns-only")]
    pub netns_only: bool,
    /// Keep running when the namespace goes away
    #[arg(long = "no-netns-quit")]
    pub no_netns_quit: bool,
    /// Configure the namespace interface: MTU, addresses, routes
    #[arg(long = "config-net")]
    pub config_net: bool,
    /// Deprecated, will be dropped soon: with --config-net, set only a default route
    #[arg(long = "no-copy-routes")]
    pub no_copy_routes: bool,
    /// Deprecated, will be dropped soon: with --config-net, set only one address per family
    #[arg(long = "no-copy-addrs")]
    pub no_copy_addrs: bool,
    /// MAC address of the namespace interface [default: chosen by the kernel]
    #[arg(long = "ns-mac-addr", value_name = "MAC", value_parser = parse_mac)]
    pub ns_mac_addr: Option<Mac>,
    /// Don't splice TCP connections and UDP flows from the host's loopback to forwarded
    /// ports: they go through the tap, and their source is the mapped host-loopback
    /// address; `-T` and `-U` are off
    #[arg(long = "no-splice")]
    pub no_splice: bool,
    /// Open the tap without virtio-net headers: no checksum or TCP segmentation offload,
    /// every frame at most one MTU (a passt-rs extension)
    #[arg(long = "no-tap-offload")]
    pub no_tap_offload: bool,
    /// No tap device in the namespace: only loopback traffic between the namespaces is
    /// forwarded (spliced); implies --host-lo-to-ns-lo and --no-icmp
    #[arg(long = "splice-only")]
    pub splice_only: bool,

    /// Command to run in the new namespace (default: your shell), or the PID
    /// of a process whose namespaces to join
    #[arg(value_name = "COMMAND|PID", trailing_var_arg = true, num_args = 0..)]
    command: Vec<OsString>,

    /// Where pasta connects to; `None` for passt.
    #[arg(skip)]
    pub target: Option<PastaTarget>,
}

pub(crate) const SPEC_HELP: &str = "\
SPEC for -t, -u (and pasta's -T, -U):
  none          forward nothing
  auto          (pasta) forward the ports bound on the other side, rescanned every second (-u: bound
                UDP ports and listening TCP ports)
  all           (passt -t/-u) forward every port that is not ephemeral
  LIST          comma-separated ports or FIRST-LAST ranges, each optionally
                mapped with :TARGET or :TFIRST-TLAST; ~PORTS excludes
                (exclusions alone: every non-ephemeral port but those);
                -t/-u accept a prefix ADDR/, [ADDR]/, %IFNAME/ or ADDR%IFNAME/
  examples: 22   22:2222   8000-8010:9000-9010   192.0.2.1/80   5-25,~10-20   ~22";

/// Options for pasta only: (field id, option spelling).
pub(crate) const PASTA_ONLY: &[(&str, &str)] = &[
    ("ns_ifname", "-I/--ns-ifname"),
    ("tcp_ns", "-T/--tcp-ns"),
    ("udp_ns", "-U/--udp-ns"),
    ("host_lo_to_ns_lo", "--host-lo-to-ns-lo"),
    ("userns", "--userns"),
    ("netns", "--netns"),
    ("netns_only", "--netns-only"),
    ("no_netns_quit", "--no-netns-quit"),
    ("config_net", "--config-net"),
    ("no_copy_routes", "--no-copy-routes"),
    ("no_copy_addrs", "--no-copy-addrs"),
    ("ns_mac_addr", "--ns-mac-addr"),
    ("no_splice", "--no-splice"),
    ("no_tap_offload", "--no-tap-offload"),
    ("splice_only", "--splice-only"),
    ("dhcp_dns", "--dhcp-dns"),
    ("dhcp_search", "--dhcp-search"),
];

/// Options for passt only.
pub(crate) const PASST_ONLY: &[(&str, &str)] = &[
    ("socket", "-s/--socket"),
    ("vhost_user", "--vhost-user"),
    ("print_capabilities", "--print-capabilities"),
    ("one_off", "-1/--one-off"),
    ("no_dhcp_dns", "--no-dhcp-dns"),
    ("no_dhcp_search", "--no-dhcp-search"),
];

/// Why parsing stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    /// Help, version or capabilities were printed: exit with this status.
    Exit(i32),
    /// A bad option or value: one line naming it. Print it with
    /// [`CliError::report`]; the exit status is 1.
    Usage(String),
}

impl CliError {
    /// The exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Exit(c) => *c,
            CliError::Usage(_) => 1,
        }
    }

    /// Prints a usage error (with the hint to `--help`) on standard error and
    /// returns the exit status.
    pub fn report(&self, mode: Mode) -> i32 {
        if let CliError::Usage(m) = self {
            eprintln!("{}: {m}", mode.name());
            eprintln!("Try '{} --help' for more information.", mode.name());
        }
        self.exit_code()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Exit(c) => write!(f, "exit status {c}"),
            CliError::Usage(m) => f.write_str(m),
        }
    }
}

impl Options {
    /// The last `-a` of the IPv4 family.
    pub fn addr4(&self) -> Option<Ipv4Addr> {
        last_v4(&self.address.iter().map(|a| a.addr).collect::<Vec<_>>())
    }
    /// The last `-a` of the IPv6 family.
    pub fn addr6(&self) -> Option<Ipv6Addr> {
        last_v6(&self.address.iter().map(|a| a.addr).collect::<Vec<_>>())
    }
    /// The last `-g` of the IPv4 family.
    pub fn gateway4(&self) -> Option<Ipv4Addr> {
        last_v4(&self.gateway)
    }
    /// The last `-g` of the IPv6 family.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        last_v6(&self.gateway)
    }
    /// The last `-o` of the IPv4 family.
    pub fn outbound4(&self) -> Option<Ipv4Addr> {
        last_v4(&self.outbound)
    }
    /// The last `-o` of the IPv6 family.
    pub fn outbound6(&self) -> Option<Ipv6Addr> {
        last_v6(&self.outbound)
    }
    /// Whether `-D none` (or an empty `-D`) was given.
    pub fn dns_disabled(&self) -> bool {
        self.dns.contains(&AddrOrNone::None)
    }
    /// Whether `-S none` was given.
    pub fn search_disabled(&self) -> bool {
        self.search.iter().any(|s| s == "none" || s.is_empty())
    }
}

/// The last address of `v` that `of` takes: the last one of a family.
pub(crate) fn last_of<A>(v: &[IpAddr], of: impl Fn(IpAddr) -> Option<A>) -> Option<A> {
    v.iter().rev().find_map(|a| of(*a))
}

/// `a` if it is an IPv4 address.
pub(crate) fn v4_of(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    }
}

/// `a` if it is an IPv6 address.
pub(crate) fn v6_of(a: IpAddr) -> Option<Ipv6Addr> {
    match a {
        IpAddr::V6(v) => Some(v),
        IpAddr::V4(_) => None,
    }
}

fn last_v4(v: &[IpAddr]) -> Option<Ipv4Addr> {
    last_of(v, v4_of)
}

fn last_v6(v: &[IpAddr]) -> Option<Ipv6Addr> {
    last_of(v, v6_of)
}

/// Per-family value of `--map-host-loopback` / `--map-guest-addr`:
/// `None` = not given, `Some(None)` = disabled, `Some(Some(a))` = address.
pub fn map_v4(v: &[AddrOrNone]) -> Option<Option<Ipv4Addr>> {
    v.iter().rev().find_map(|a| match a {
        AddrOrNone::None => Some(None),
        AddrOrNone::Addr(IpAddr::V4(a)) => Some(Some(*a)),
        AddrOrNone::Addr(IpAddr::V6(_)) => None,
    })
}

/// IPv6 counterpart of [`map_v4`].
pub fn map_v6(v: &[AddrOrNone]) -> Option<Option<Ipv6Addr>> {
    v.iter().rev().find_map(|a| match a {
        AddrOrNone::None => Some(None),
        AddrOrNone::Addr(IpAddr::V6(a)) => Some(Some(*a)),
        AddrOrNone::Addr(IpAddr::V4(_)) => None,
    })
}

#[cfg(test)]
mod tests;

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

fn no_unspec_etc(a: IpAddr, loopback_ok: bool, what: &str) -> Result<IpAddr, String> {
    let bad = match a {
        IpAddr::V4(v) => {
            v.is_unspecified()
                || v.is_multicast()
                || v == Ipv4Addr::BROADCAST
                || (!loopback_ok && v.is_loopback())
        }
        IpAddr::V6(v) => {
            v.is_unspecified()
                || v.is_multicast()
                || v.to_ipv4_mapped().is_some()
                || is_v4_compat(v)
                || (!loopback_ok && v.is_loopback())
        }
    };
    if bad {
        Err(format!("{a} can't be used as {what}"))
    } else {
        Ok(a)
    }
}

fn is_v4_compat(v: Ipv6Addr) -> bool {
    let s = v.segments();
    s[..6].iter().all(|x| *x == 0) && !v.is_unspecified() && !v.is_loopback()
}

fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("'{s}' is not an IPv4 or IPv6 address"))
}

/// `-a ADDR[/PREFIX]`.
fn parse_assign_addr(s: &str) -> Result<GuestAddr, String> {
    let (a, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr = no_unspec_etc(ip(a)?, false, "the guest's address")?;
    let prefix = match prefix {
        None => None,
        Some(p) => {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            match p.parse::<u8>() {
                Ok(v) if v <= max && p.bytes().all(|b| b.is_ascii_digit()) => Some(v),
                _ => return Err(format!("'{p}' is not a prefix length (0 to {max})")),
            }
        }
    };
    Ok(GuestAddr { addr, prefix })
}

/// Longest `-H` or `--fqdn` (a domain name in text form).
pub const NAME_MAX: usize = 253;

/// `-H` and `--fqdn`: a name of at most [`NAME_MAX`] bytes, no control
/// characters or blanks.
fn parse_dns_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > NAME_MAX {
        return Err(format!("the name must have 1 to {NAME_MAX} bytes"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("'{s}' is not a host name"));
    }
    Ok(s.to_string())
}

fn parse_gateway(s: &str) -> Result<IpAddr, String> {
    no_unspec_etc(ip(s)?, false, "a gateway")
}

fn parse_outbound(s: &str) -> Result<IpAddr, String> {
    no_unspec_etc(ip(s)?, false, "an outbound address")
}

fn parse_dns(s: &str) -> Result<AddrOrNone, String> {
    if s == "none" || s.is_empty() {
        return Ok(AddrOrNone::None);
    }
    let a = s
        .parse::<IpAddr>()
        .map_err(|_| format!("'{s}' is neither 'none' nor an address"))?;
    no_unspec_etc(a, true, "a nameserver").map(AddrOrNone::Addr)
}

fn parse_search(s: &str) -> Result<String, String> {
    if s.len() > crate::resolv::MAX_DOMAIN {
        return Err("domain name too long".into());
    }
    if s.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(format!("'{s}' is not a domain name"));
    }
    Ok(s.to_string())
}

fn parse_dns_forward(s: &str) -> Result<IpAddr, String> {
    no_unspec_etc(ip(s)?, false, "a DNS forwarding address")
}

fn parse_dns_host(s: &str) -> Result<IpAddr, String> {
    no_unspec_etc(ip(s)?, true, "a host nameserver")
}

fn parse_map(s: &str) -> Result<AddrOrNone, String> {
    if s == "none" {
        return Ok(AddrOrNone::None);
    }
    no_unspec_etc(ip(s)?, false, "a mapped address").map(AddrOrNone::Addr)
}

fn parse_mtu(s: &str) -> Result<u16, String> {
    let v: u32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v == 0 || (u32::from(passt_core::MIN_MTU)..=65535).contains(&v) {
        Ok(v as u16)
    } else {
        Err(format!(
            "{v} is out of range (0, or {}..=65535)",
            passt_core::MIN_MTU
        ))
    }
}

/// Prefix length from `-n`: bits (0..=32) or a contiguous dotted-quad mask.
pub fn parse_netmask(s: &str) -> Result<u8, String> {
    if let Ok(b) = s.parse::<u8>() {
        if b <= 32 && !s.starts_with('+') {
            return Ok(b);
        }
    }
    let m: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("'{s}' is neither a prefix length nor a netmask"))?;
    let m = u32::from(m);
    let len = m.leading_ones();
    if m.checked_shl(len).unwrap_or(0) != 0 {
        return Err(format!("'{s}' is not a contiguous netmask"));
    }
    Ok(len as u8)
}

fn parse_mac(s: &str) -> Result<Mac, String> {
    Mac::parse(s).ok_or_else(|| format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

fn parse_ifname(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > IFNAME_MAX || s.contains('/') || s.contains(char::is_whitespace) {
        return Err(format!(
            "'{s}' is not a valid interface name (1 to {IFNAME_MAX} characters)"
        ));
    }
    Ok(s.to_string())
}

fn parse_fd(s: &str) -> Result<i32, String> {
    let v: i32 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a file descriptor number"))?;
    if v == 1 || v == 2 || v < 0 {
        return Err(format!(
            "{v} is not allowed: the descriptor must be 0 (standard input) or above 2"
        ));
    }
    Ok(v)
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of bytes"))?;
    if v < LOG_SIZE_MIN {
        return Err(format!("the minimum is {LOG_SIZE_MIN} bytes"));
    }
    Ok(v)
}

fn id_or_name(s: &str) -> Result<IdOrName, String> {
    if s.is_empty() {
        return Err("empty user or group".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u32>()
            .map(IdOrName::Id)
            .map_err(|_| format!("'{s}' is out of range"));
    }
    if s.contains(|c: char| c.is_whitespace() || c == ':' || c.is_control()) {
        return Err(format!("'{s}' is not a user or group name"));
    }
    Ok(IdOrName::Name(s.to_string()))
}

fn parse_runas(s: &str) -> Result<RunAs, String> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let user = id_or_name(u)?;
    if user == IdOrName::Name("root".into()) || user == IdOrName::Id(0) {
        return Err("running as root (UID 0) is not allowed".into());
    }
    let group = g.map(id_or_name).transpose()?;
    Ok(RunAs { user, group })
}

fn parse_socket_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() || s.len() > SOCKET_PATH_MAX {
        return Err(format!(
            "the socket path must have 1 to {SOCKET_PATH_MAX} bytes"
        ));
    }
    Ok(PathBuf::from(s))
}

fn parse_nonempty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(s))
}

/// Every option of passt and pasta. Fields are public and typed; `Vec`
/// fields keep the order given on the command line.
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
    #[arg(short = 'F', long = "fd", value_name = "FD", value_parser = parse_fd)]
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
    #[arg(short = 'm', long = "mtu", value_name = "MTU", value_parser = parse_mtu)]
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
    /// Forward UDP ports from the namespace's loopback to the host's (parsed and checked;
    /// not forwarded yet: use the gateway address, which reaches the host's loopback) [default: auto]
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
    pub netns: Option<PathBuf>,
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
    /// Don't splice TCP connections from the host's loopback to forwarded ports: they go
    /// through the tap, and their source is the mapped host-loopback address; `-T` is off
    #[arg(long = "no-splice")]
    pub no_splice: bool,
    /// Open the tap without virtio-net headers: no checksum or TCP segmentation offload,
    /// every frame at most one MTU (a passt-rs extension)
    #[arg(long = "no-tap-offload")]
    pub no_tap_offload: bool,

    /// Command to run in the new namespace (default: your shell), or the PID
    /// of a process whose namespaces to join
    #[arg(value_name = "COMMAND|PID", trailing_var_arg = true, num_args = 0..)]
    pub command: Vec<OsString>,

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

/// What `--version` prints after the program's name, in upstream's shape:
/// the version on the first line, then the copyright and licence.
pub const VERSION_BLOB: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (passt-rs)\n",
    "Copyright the passt-rs contributors\n",
    "MIT License <https://opensource.org/licenses/MIT>\n",
    "This is free software: you are free to change and redistribute it.\n",
    "There is NO WARRANTY, to the extent permitted by law.\n"
);

/// The clap command for `mode`: options of the other mode hidden, help texts
/// adapted.
pub fn command(mode: Mode) -> clap::Command {
    let mut cmd = Options::command()
        .name(mode.name())
        .bin_name(mode.name())
        .version(env!("CARGO_PKG_VERSION"))
        .long_version(VERSION_BLOB)
        .arg(
            clap::Arg::new("version")
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version and exit"),
        );
    let hide: &[(&str, &str)] = match mode {
        Mode::Passt => PASTA_ONLY,
        Mode::Pasta => PASST_ONLY,
    };
    for (id, _) in hide {
        cmd = cmd.mut_arg(*id, |a| a.hide(true));
    }
    match mode {
        Mode::Passt => {
            cmd = cmd
                .about("Connect a qemu or libvirt guest to the host's network through a UNIX domain socket, without privileges.")
                .override_usage("passt [OPTION]...")
                .mut_arg("command", |a| a.hide(true))
                .mut_arg("tcp_ports", |a| {
                    a.help("Forward TCP ports from the host to the guest (repeatable; see SPEC below) [default: none]")
                })
                .mut_arg("udp_ports", |a| {
                    a.help("Forward UDP ports from the host to the guest (repeatable; see SPEC below) [default: none]")
                });
        }
        Mode::Pasta => {
            cmd = cmd
                .about("Connect a network namespace to the host's network through a tap device, without privileges. Without a PID or --netns, run COMMAND (or your shell) in new user and network namespaces.")
                .override_usage("pasta [OPTION]... [COMMAND [ARG]...]\n       pasta [OPTION]... PID\n       pasta [OPTION]... --netns PATH|NAME")
                .mut_arg("tcp_ports", |a| {
                    a.help("Forward TCP ports from the host to the namespace (repeatable; see SPEC below) [default: auto]")
                })
                .mut_arg("udp_ports", |a| {
                    a.help("Forward UDP ports from the host to the namespace (repeatable; see SPEC below) [default: auto]")
                })
                .mut_arg("dns", |a| {
                    a.help("Nameserver to use (repeatable, up to 3 per family); 'none' disables DNS [default: from /etc/resolv.conf, advertised only with --dhcp-dns]")
                })
                .mut_arg("search", |a| {
                    a.help("Search domain (repeatable, up to 6); 'none' disables the list [default: from /etc/resolv.conf, advertised only with --dhcp-search]")
                });
        }
    }
    cmd
}

/// Turns a clap error into our one-line message.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line");
    first
        .trim()
        .strip_prefix("error: ")
        .unwrap_or(first.trim())
        .to_string()
}

fn given(m: &clap::ArgMatches, id: &str) -> bool {
    matches!(m.value_source(id), Some(ValueSource::CommandLine))
}

/// Parses `args` (without the program name) for `mode`. Help and version are
/// printed here (standard output, [`CliError::Exit`] with status 0); a bad
/// option or value gives [`CliError::Usage`] with one line naming it.
/// Deprecated options print a warning on standard error.
pub fn parse_args(mode: Mode, args: &[OsString]) -> Result<Options, CliError> {
    let mut cmd = command(mode);
    let argv = std::iter::once(OsString::from(mode.name())).chain(args.iter().cloned());
    let m = match cmd.try_get_matches_from_mut(argv) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    Err(CliError::Exit(0))
                }
                // getopt_long's wording, which clients match on (Podman
                // retries without an option pasta reports this way).
                ErrorKind::UnknownArgument => {
                    use clap::error::{ContextKind, ContextValue};
                    match e.get(ContextKind::InvalidArg) {
                        Some(ContextValue::String(a)) => {
                            let a = a.split('=').next().unwrap_or(a);
                            Err(CliError::Usage(format!("unrecognized option '{a}'")))
                        }
                        _ => Err(CliError::Usage(clap_message(&e))),
                    }
                }
                _ => Err(CliError::Usage(clap_message(&e))),
            };
        }
    };
    let other: &[(&str, &str)] = match mode {
        Mode::Passt => PASTA_ONLY,
        Mode::Pasta => PASST_ONLY,
    };
    for (id, name) in other {
        if given(&m, id) {
            let owner = match mode {
                Mode::Passt => "pasta",
                Mode::Pasta => "passt",
            };
            return Err(CliError::Usage(format!("{name} is for {owner} only")));
        }
    }
    let mut o = Options::from_arg_matches(&m).map_err(|e| CliError::Usage(clap_message(&e)))?;
    o.mode = mode;
    if o.print_manpage {
        print!("{}", crate::man::man_page(mode));
        return Err(CliError::Exit(0));
    }
    if let Some(shell) = o.print_completions {
        print!("{}", crate::man::completions(mode, shell));
        return Err(CliError::Exit(0));
    }
    validate(&mut o)?;
    for (on, name) in [
        (o.stderr, "--stderr"),
        (o.no_copy_routes, "--no-copy-routes"),
        (o.no_copy_addrs, "--no-copy-addrs"),
    ] {
        if on {
            eprintln!("{}: warning: {name} will be dropped soon", mode.name());
        }
    }
    if o.print_capabilities {
        println!("{{\n  \"type\": \"net\"\n}}");
        return Err(CliError::Exit(0));
    }
    Ok(o)
}

fn usage<T>(s: impl Into<String>) -> Result<T, CliError> {
    Err(CliError::Usage(s.into()))
}

fn validate(o: &mut Options) -> Result<(), CliError> {
    if o.ipv4_only && o.ipv6_only {
        return usage("-4/--ipv4-only and -6/--ipv6-only can't be used together");
    }
    if o.trace {
        o.debug = true;
    }
    // -a ADDR/PREFIX and -n both give the IPv4 prefix: one or the other.
    if o.address.iter().any(|a| a.prefix.is_some()) {
        if o.netmask.is_some() {
            return usage("redundant prefix length: -n/--netmask and -a/--address ADDR/PREFIX");
        }
        if let Some(p) = o
            .address
            .iter()
            .rev()
            .find(|a| a.addr.is_ipv4())
            .and_then(|a| a.prefix)
        {
            o.netmask = Some(p);
        }
    }
    // -S takes one domain or a space-separated list.
    o.search = o
        .search
        .iter()
        .flat_map(|s| {
            let words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
            if words.is_empty() {
                vec![String::new()]
            } else {
                words
            }
        })
        .collect();
    if o.mode == Mode::Passt && o.fd.is_some() {
        o.one_off = true;
    }

    let kind_in = match o.mode {
        Mode::Passt => SpecKind::PasstInbound,
        Mode::Pasta => SpecKind::PastaInbound,
    };
    let tables: [(&Vec<String>, &str, SpecKind, bool); 4] = [
        (&o.tcp_ports, "-t/--tcp-ports", kind_in, o.no_tcp),
        (&o.udp_ports, "-u/--udp-ports", kind_in, o.no_udp),
        (&o.tcp_ns, "-T/--tcp-ns", SpecKind::PastaOutbound, o.no_tcp),
        (&o.udp_ns, "-U/--udp-ns", SpecKind::PastaOutbound, o.no_udp),
    ];
    for (specs, name, kind, disabled) in tables {
        if specs.is_empty() {
            continue;
        }
        if disabled {
            let proto = if name.contains("tcp") { "TCP" } else { "UDP" };
            return usage(format!("{name} given, but {proto} is disabled"));
        }
        for s in specs {
            // Check each one alone and in sequence (mode conflicts).
            if let Err(e) = FwdTable::from_specs(&[s], kind, EPHEMERAL_DEFAULT) {
                return usage(format!("{name} '{s}': {e}"));
            }
        }
        if let Err(e) = FwdTable::from_specs(specs, kind, EPHEMERAL_DEFAULT) {
            return usage(format!("{name}: {e}"));
        }
    }

    if let Some(n) = o.map_host_loopback.iter().find_map(|a| match a {
        AddrOrNone::Addr(a) if o.ipv4_only && a.is_ipv6() || o.ipv6_only && a.is_ipv4() => Some(*a),
        _ => None,
    }) {
        return usage(format!(
            "--map-host-loopback {n}: that address family is disabled"
        ));
    }

    if o.mode == Mode::Passt {
        if o.stats.is_some() && !o.foreground {
            return usage("--stats: statistics are printed in the foreground only (-f)");
        }
        if let Some(c) = o.command.first() {
            return usage(format!(
                "extra non-option argument '{}'",
                c.to_string_lossy()
            ));
        }
        return Ok(());
    }

    if (o.no_copy_routes || o.no_copy_addrs) && !o.config_net {
        let which = if o.no_copy_routes {
            "--no-copy-routes"
        } else {
            "--no-copy-addrs"
        };
        return usage(format!("{which} needs --config-net"));
    }

    let pid = match o.command.as_slice() {
        [one] => one.to_str().and_then(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<u32>().ok()
            } else {
                None
            }
        }),
        _ => None,
    };
    o.target = Some(match (&o.netns, pid) {
        (Some(_), _) if !o.command.is_empty() => {
            return usage("--netns can't be combined with a PID or a command");
        }
        (Some(n), _) => {
            let p = if n.as_os_str().to_string_lossy().contains('/') {
                n.clone()
            } else {
                PathBuf::from("/run/netns").join(n)
            };
            PastaTarget::Netns(p)
        }
        (None, Some(0)) => return usage("PID 0 is not a process"),
        (None, Some(p)) => PastaTarget::Pid(p),
        (None, None) => PastaTarget::Spawn(o.command.clone()),
    });
    if o.userns.is_some() && matches!(o.target, Some(PastaTarget::Spawn(_))) {
        return usage("--userns needs --netns or a PID");
    }
    if matches!(o.target, Some(PastaTarget::Netns(_))) && o.userns.is_none() {
        o.netns_only = true;
    }
    let spawn = matches!(o.target, Some(PastaTarget::Spawn(_))) && o.fd.is_none();
    if o.stats.is_some() && !o.foreground && !spawn {
        return usage("--stats: statistics are printed in the foreground only (-f)");
    }
    Ok(())
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
    /// The last `--dns-forward` of the IPv4 family.
    pub fn dns_forward4(&self) -> Option<Ipv4Addr> {
        last_v4(&self.dns_forward)
    }
    /// The last `--dns-forward` of the IPv6 family.
    pub fn dns_forward6(&self) -> Option<Ipv6Addr> {
        last_v6(&self.dns_forward)
    }
    /// The last `--dns-host` of the IPv4 family.
    pub fn dns_host4(&self) -> Option<Ipv4Addr> {
        last_v4(&self.dns_host)
    }
    /// The last `--dns-host` of the IPv6 family.
    pub fn dns_host6(&self) -> Option<Ipv6Addr> {
        last_v6(&self.dns_host)
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

fn last_v4(v: &[IpAddr]) -> Option<Ipv4Addr> {
    v.iter().rev().find_map(|a| match a {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    })
}

fn last_v6(v: &[IpAddr]) -> Option<Ipv6Addr> {
    v.iter().rev().find_map(|a| match a {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    })
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
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    fn parse(mode: Mode, args: &[&str]) -> Result<Options, CliError> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_args(mode, &v)
    }
    fn ok(mode: Mode, args: &[&str]) -> Options {
        parse(mode, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }
    /// The error message, which must name `needle`.
    fn bad(mode: Mode, args: &[&str], needle: &str) {
        match parse(mode, args) {
            Err(e @ CliError::Usage(_)) => {
                assert_eq!(e.exit_code(), 1);
                let m = e.to_string();
                assert!(!m.contains('\n'), "{args:?}: {m}");
                assert!(m.contains(needle), "{args:?}: '{m}' should name '{needle}'");
            }
            other => panic!("{args:?}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn argv0() {
        for (n, m) in [
            ("pasta", Some(Mode::Pasta)),
            ("/usr/bin/pasta.avx2", Some(Mode::Pasta)),
            ("passt", Some(Mode::Passt)),
            ("./passt.avx2", Some(Mode::Passt)),
            ("/opt/passt/bin/pasta", Some(Mode::Pasta)),
            ("qrap", None),
            ("", None),
        ] {
            assert_eq!(mode_from_argv0(OsStr::new(n)), m, "{n}");
        }
    }

    #[test]
    fn defaults() {
        let o = ok(Mode::Passt, &[]);
        assert_eq!(o.mode, Mode::Passt);
        assert!(!o.debug && !o.quiet && !o.foreground && !o.one_off);
        assert_eq!(o.mtu, None);
        assert!(o.tcp_ports.is_empty());
        assert_eq!(o.target, None);
        let o = ok(Mode::Pasta, &[]);
        assert_eq!(o.target, Some(PastaTarget::Spawn(vec![])));
    }

    #[test]
    fn every_option_parses() {
        let common: &[&[&str]] = &[
            &["-d"],
            &["--debug"],
            &["--trace"],
            &["-q"],
            &["--quiet"],
            &["-f"],
            &["--foreground"],
            &["-e"],
            &["--stderr"],
            &["-l", "/tmp/x.log"],
            &["--log-file", "/tmp/x.log"],
            &["--log-size", "100000"],
            &["--runas", "1000"],
            &["--runas", "1000:1000"],
            &["--runas", "nobody"],
            &["--runas", "nobody:nogroup"],
            &["-F", "3"],
            &["--fd", "10"],
            &["-p", "/tmp/x.pcap"],
            &["--pcap", "/tmp/x.pcap"],
            &["-P", "/tmp/x.pid"],
            &["--pid", "/tmp/x.pid"],
            &["-m", "1500"],
            &["--mtu", "0"],
            &["--mtu", "65535"],
            &["--mtu", "68"],
            &["-a", "192.0.2.2"],
            &["--address", "2001:db8::2"],
            &["-n", "24"],
            &["--netmask", "255.255.255.0"],
            &["-M", "02:00:00:00:00:01"],
            &["--mac-addr", "9a:55:9a:55:9a:56"],
            &["-g", "192.0.2.1"],
            &["--gateway", "fe80::1"],
            &["-i", "eth0"],
            &["--interface", "eth0"],
            &["-o", "192.0.2.2"],
            &["--outbound", "2001:db8::2"],
            &["--outbound-if4", "eth0"],
            &["--outbound-if6", "eth1"],
            &["-D", "192.0.2.53"],
            &["--dns", "none"],
            &["-S", "example.org"],
            &["--search", "none"],
            &["--dns-forward", "192.0.2.53"],
            &["--dns-host", "127.0.0.53"],
            &["--no-tcp"],
            &["--no-udp"],
            &["--no-icmp"],
            &["--no-dhcp"],
            &["--no-ndp"],
            &["--no-dhcpv6"],
            &["--no-ra"],
            &["--freebind"],
            &["--map-host-loopback", "192.0.2.1"],
            &["--map-host-loopback", "none"],
            &["--no-map-gw"],
            &["--map-guest-addr", "192.0.2.3"],
            &["--map-guest-addr", "none"],
            &["-4"],
            &["--ipv4-only"],
            &["-6"],
            &["--ipv6-only"],
            &["-t", "22"],
            &["--tcp-ports", "none"],
            &["-u", "53"],
            &["--udp-ports", "1000-2000:3000-4000"],
        ];
        let passt: &[&[&str]] = &[
            &["-s", "/tmp/s.sock"],
            &["--socket", "/tmp/s.sock"],
            &["--socket-path", "/tmp/s.sock"],
            &["--vhost-user"],
            &["-1"],
            &["--one-off"],
            &["--no-dhcp-dns"],
            &["--no-dhcp-search"],
            &["-t", "all"],
            &["-u", "~53"],
        ];
        let pasta: &[&[&str]] = &[
            &["-I", "tap0"],
            &["--ns-ifname", "eth0"],
            &["-T", "auto"],
            &["--tcp-ns", "8080:80"],
            &["-U", "none"],
            &["--udp-ns", "53"],
            &["--host-lo-to-ns-lo"],
            &["--netns", "foo"],
            &["--netns-only"],
            &["--no-netns-quit"],
            &["--config-net"],
            &["--config-net", "--no-copy-routes"],
            &["--config-net", "--no-copy-addrs"],
            &["--ns-mac-addr", "02:00:00:00:00:02"],
            &["--no-splice"],
            &["--no-tap-offload"],
            &["--dhcp-dns"],
            &["--dhcp-search"],
            &["-t", "auto"],
            &["--userns", "/proc/1/ns/user", "1"],
        ];
        for a in common {
            ok(Mode::Passt, a);
            ok(Mode::Pasta, a);
        }
        for a in passt {
            ok(Mode::Passt, a);
        }
        for a in pasta {
            ok(Mode::Pasta, a);
        }
    }

    #[test]
    fn typed_values() {
        let o = ok(
            Mode::Pasta,
            &[
                "-a",
                "192.0.2.2",
                "-a",
                "2001:db8::2",
                "-a",
                "192.0.2.3",
                "-n",
                "255.255.0.0",
                "-g",
                "192.0.2.1",
                "-m",
                "1500",
                "-M",
                "02:00:00:00:00:01",
                "--log-size",
                "50000",
                "--runas",
                "1000:100",
                "-F",
                "5",
                "-D",
                "192.0.2.53",
                "-D",
                "2001:db8::53",
                "-S",
                "a.test",
                "-S",
                "b.test",
            ],
        );
        assert_eq!(o.addr4(), Some("192.0.2.3".parse().unwrap()));
        assert_eq!(o.addr6(), Some("2001:db8::2".parse().unwrap()));
        assert_eq!(o.netmask, Some(16));
        assert_eq!(o.gateway4(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(o.gateway6(), None);
        assert_eq!(o.mtu, Some(1500));
        assert_eq!(o.mac_addr, Some(Mac([2, 0, 0, 0, 0, 1])));
        assert_eq!(o.log_size, Some(50000));
        assert_eq!(
            o.runas,
            Some(RunAs {
                user: IdOrName::Id(1000),
                group: Some(IdOrName::Id(100))
            })
        );
        assert_eq!(o.fd, Some(5));
        assert_eq!(o.dns.len(), 2);
        assert_eq!(o.search, vec!["a.test", "b.test"]);
        assert!(!o.one_off);
        let o = ok(Mode::Passt, &["-S", "x.test  y.test", "-S", "z.test"]);
        assert_eq!(o.search, vec!["x.test", "y.test", "z.test"]);
        assert!(!o.search_disabled());
        assert!(ok(Mode::Passt, &["-S", ""]).search_disabled());
        assert!(ok(Mode::Passt, &["-S", "none"]).search_disabled());
        let o = ok(Mode::Passt, &["-F", "5"]);
        assert!(o.one_off, "--fd implies --one-off");
        let o = ok(Mode::Passt, &["--trace"]);
        assert!(o.debug && o.trace);
    }

    #[test]
    fn upstream_2026_forms() {
        let o = ok(Mode::Passt, &["-a", "192.0.2.2/20", "-a", "2001:db8::2/56"]);
        assert_eq!(o.addr4(), Some("192.0.2.2".parse().unwrap()));
        assert_eq!(o.addr6(), Some("2001:db8::2".parse().unwrap()));
        assert_eq!(o.netmask, Some(20), "the IPv4 prefix is the netmask");
        // As upstream: any prefix given with -a makes -n redundant.
        bad(
            Mode::Pasta,
            &["-a", "2001:db8::2/56", "-n", "24"],
            "redundant",
        );
        let o = ok(Mode::Pasta, &["-a", "2001:db8::2", "-n", "24"]);
        assert_eq!(o.netmask, Some(24));
        let o = ok(Mode::Passt, &["--fd", "0"]);
        assert_eq!(o.fd, Some(0));
        assert!(o.one_off);
        let o = ok(Mode::Passt, &["-H", "vm1", "--fqdn", "vm1.example.org"]);
        assert_eq!(o.hostname.as_deref(), Some("vm1"));
        assert_eq!(o.fqdn.as_deref(), Some("vm1.example.org"));
        let o = ok(Mode::Pasta, &["--hostname", "c1"]);
        assert_eq!(o.hostname.as_deref(), Some("c1"));
        // Deprecated, still accepted.
        let o = ok(
            Mode::Pasta,
            &[
                "--stderr",
                "--config-net",
                "--no-copy-routes",
                "--no-copy-addrs",
            ],
        );
        assert!(o.stderr && o.no_copy_routes && o.no_copy_addrs);
    }

    #[test]
    fn version_in_upstream_shape() {
        let mut lines = VERSION_BLOB.lines();
        let first = lines.next().unwrap_or_default();
        assert!(first.starts_with(env!("CARGO_PKG_VERSION")), "{first}");
        assert!(lines.next().unwrap_or_default().starts_with("Copyright "));
        let v = command(Mode::Pasta).render_long_version();
        assert!(v.starts_with("pasta 0."), "{v}");
    }

    #[test]
    fn last_one_wins() {
        let o = ok(Mode::Passt, &["-m", "1500", "-m", "9000"]);
        assert_eq!(o.mtu, Some(9000));
        let o = ok(Mode::Passt, &["-l", "/a", "--log-file", "/b"]);
        assert_eq!(o.log_file, Some(PathBuf::from("/b")));
        let o = ok(
            Mode::Passt,
            &["-p", "/a", "-p", "/b", "-P", "/c", "-P", "/d"],
        );
        assert_eq!(o.pcap, Some(PathBuf::from("/b")));
        assert_eq!(o.pid_file, Some(PathBuf::from("/d")));
        let o = ok(Mode::Passt, &["-d", "-q"]);
        assert!(o.quiet && !o.debug);
        let o = ok(Mode::Passt, &["-q", "-d"]);
        assert!(!o.quiet && o.debug);
        let o = ok(Mode::Passt, &["--trace", "-q"]);
        assert!(o.quiet && !o.debug && !o.trace);
        let o = ok(Mode::Passt, &["-i", "a", "-i", "b", "-f", "-f"]);
        assert_eq!(o.interface.as_deref(), Some("b"));
        let o = ok(Mode::Passt, &["-a", "192.0.2.2", "-a", "192.0.2.9"]);
        assert_eq!(o.addr4(), Some("192.0.2.9".parse().unwrap()));
        let o = ok(Mode::Pasta, &["-I", "a", "-I", "b"]);
        assert_eq!(o.ns_ifname.as_deref(), Some("b"));
        // Repeatable ones accumulate.
        let o = ok(
            Mode::Passt,
            &["-t", "22", "-t", "80", "-u", "53", "-u", "54"],
        );
        assert_eq!(o.tcp_ports, vec!["22", "80"]);
        assert_eq!(o.udp_ports, vec!["53", "54"]);
    }

    #[test]
    fn real_world_command_lines() {
        // As container engines start pasta.
        let o = ok(
            Mode::Pasta,
            &[
                "--config-net",
                "--pid",
                "/run/user/1000/pasta.pid",
                "--dns-forward",
                "169.254.1.1",
                "-t",
                "none",
                "-u",
                "none",
                "-T",
                "none",
                "-U",
                "none",
                "--no-map-gw",
                "--quiet",
                "--netns",
                "/run/user/1000/netns/netns-1234",
                "--map-guest-addr",
                "169.254.1.2",
            ],
        );
        assert!(o.config_net && o.quiet && o.no_map_gw && o.netns_only);
        assert_eq!(o.dns_forward4(), Some(Ipv4Addr::new(169, 254, 1, 1)));
        assert_eq!(
            map_v4(&o.map_guest_addr),
            Some(Some(Ipv4Addr::new(169, 254, 1, 2)))
        );
        // A slirp4netns-like set-up.
        let o = ok(
            Mode::Pasta,
            &[
                "-a",
                "10.0.2.0",
                "-n",
                "24",
                "-g",
                "10.0.2.2",
                "--dns-forward",
                "10.0.2.3",
                "-m",
                "1500",
                "--ipv4-only",
                "-f",
                "--config-net",
                "4242",
            ],
        );
        assert_eq!(o.target, Some(PastaTarget::Pid(4242)));
        assert_eq!(o.netmask, Some(24));
        // The test set-ups of passt.
        let o = ok(
            Mode::Passt,
            &[
                "-f",
                "-s",
                "/tmp/passt.sock",
                "-t",
                "10001",
                "-u",
                "10001",
                "-P",
                "/tmp/passt.pid",
            ],
        );
        assert_eq!(o.socket, Some(PathBuf::from("/tmp/passt.sock")));
        let o = ok(
            Mode::Pasta,
            &[
                "--config-net",
                "-t",
                "10001,10002,10011,10012",
                "-T",
                "10003,10013",
                "--map-host-loopback",
                "192.0.2.1",
                "--map-host-loopback",
                "2001:db8:9a55::1",
            ],
        );
        assert_eq!(
            map_v6(&o.map_host_loopback),
            Some(Some("2001:db8:9a55::1".parse().unwrap()))
        );
    }

    #[test]
    fn abbreviated_long_options() {
        // Unique prefixes work as with getopt_long; exact names win.
        let o = ok(Mode::Pasta, &["--config", "--fore", "--dns", "192.0.2.53"]);
        assert!(o.config_net && o.foreground);
        assert_eq!(o.dns.len(), 1);
        let o = ok(Mode::Passt, &["--one", "--vhost"]);
        assert!(o.one_off && o.vhost_user);
        let o = ok(Mode::Passt, &["--no-dhcp"]);
        assert!(o.no_dhcp && !o.no_dhcpv6);
        bad(Mode::Passt, &["--no-d"], "--no-d");
        bad(
            Mode::Pasta,
            &["--bogus-opt"],
            "unrecognized option '--bogus-opt'",
        );
        bad(
            Mode::Pasta,
            &["--bogus-opt=3"],
            "unrecognized option '--bogus-opt'",
        );
    }

    #[test]
    fn bad_values() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "--bogus"),
            (&["-x"], "-x"),
            (&["-m", "67"], "--mtu"),
            (&["-m", "65536"], "--mtu"),
            (&["-m", "abc"], "--mtu"),
            (&["-m"], "--mtu"),
            (&["-a", "0.0.0.0"], "--address"),
            (&["-a", "127.0.0.1"], "--address"),
            (&["-a", "224.0.0.1"], "--address"),
            (&["-a", "255.255.255.255"], "--address"),
            (&["-a", "::"], "--address"),
            (&["-a", "::1"], "--address"),
            (&["-a", "ff02::1"], "--address"),
            (&["-a", "::ffff:192.0.2.1"], "--address"),
            (&["-a", "foo"], "--address"),
            (&["-g", "127.0.0.1"], "--gateway"),
            (&["-g", "0.0.0.0"], "--gateway"),
            (&["-n", "33"], "--netmask"),
            (&["-n", "255.0.255.0"], "--netmask"),
            (&["-n", "x"], "--netmask"),
            (&["-M", "02:00:00:00:00"], "--mac-addr"),
            (&["-M", "zz:00:00:00:00:00"], "--mac-addr"),
            (&["-F", "2"], "--fd"),
            (&["-F", "1"], "--fd"),
            (&["-a", "192.0.2.2/33"], "--address"),
            (&["-a", "2001:db8::2/129"], "--address"),
            (&["-a", "192.0.2.2/x"], "--address"),
            (
                &["-a", "192.0.2.2/24", "-n", "16"],
                "redundant prefix length",
            ),
            (
                &["-n", "16", "-a", "192.0.2.2/24"],
                "redundant prefix length",
            ),
            (&["-H", ""], "--hostname"),
            (&["--fqdn", "a b"], "--fqdn"),
            (&["-F", "-1"], "--fd"),
            (&["-F", "x"], "--fd"),
            (&["--log-size", "100"], "--log-size"),
            (&["--log-size", "1k"], "--log-size"),
            (&["--runas", "root"], "--runas"),
            (&["--runas", "0"], "--runas"),
            (&["--runas", "0:1000"], "--runas"),
            (&["--runas", "1000:"], "--runas"),
            (&["--runas", ""], "--runas"),
            (&["-D", "0.0.0.0"], "--dns"),
            (&["-D", "foo"], "--dns"),
            (&["--dns-forward", "127.0.0.1"], "--dns-forward"),
            (&["--dns-host", "0.0.0.0"], "--dns-host"),
            (&["--map-host-loopback", "127.0.0.1"], "--map-host-loopback"),
            (&["--map-guest-addr", "::"], "--map-guest-addr"),
            (&["-o", "0.0.0.0"], "--outbound"),
            (&["-i", "abcdefghijklmnop"], "--interface"),
            (&["-i", ""], "--interface"),
            (&["--outbound-if4", "a/b"], "--outbound-if4"),
            (&["-t", "65536"], "-t/--tcp-ports"),
            (&["-t", "22", "-t", "none"], "-t/--tcp-ports"),
            (&["-u", "10-5"], "-u/--udp-ports"),
            (&["--no-tcp", "-t", "22"], "-t/--tcp-ports"),
            (&["-4", "-6"], "--ipv4-only"),
            (
                &["-4", "--map-host-loopback", "fd00::1"],
                "--map-host-loopback",
            ),
        ];
        for (args, needle) in cases {
            bad(Mode::Passt, args, needle);
            bad(Mode::Pasta, args, needle);
        }
    }

    #[test]
    fn mode_specific() {
        for (args, needle) in [
            (&["-I", "x"][..], "--ns-ifname"),
            (&["--ns-ifname", "x"], "--ns-ifname"),
            (&["-T", "22"], "--tcp-ns"),
            (&["-U", "22"], "--udp-ns"),
            (&["--config-net"], "--config-net"),
            (&["--netns", "x"], "--netns"),
            (&["--userns", "x"], "--userns"),
            (&["--dhcp-dns"], "--dhcp-dns"),
            (&["--no-splice"], "--no-splice"),
            (&["-t", "auto"], "auto"),
            (&["ls"], "'ls'"),
            (&["1234"], "'1234'"),
        ] {
            bad(Mode::Passt, args, needle);
        }
        for (args, needle) in [
            (&["-s", "/tmp/x"][..], "--socket"),
            (&["--socket-path", "/tmp/x"], "--socket"),
            (&["-1"], "--one-off"),
            (&["--vhost-user"], "--vhost-user"),
            (&["--no-dhcp-dns"], "--no-dhcp-dns"),
            (&["--print-capabilities"], "--print-capabilities"),
            (&["-t", "all"], "all"),
            (&["-T", "192.0.2.1/22"], "-T/--tcp-ns"),
            (&["--no-copy-routes"], "--config-net"),
            (&["--no-copy-addrs"], "--config-net"),
            (&["--netns", "x", "ls"], "--netns"),
            (&["--netns", "x", "123"], "--netns"),
            (&["--userns", "/x"], "--userns"),
            (&["--userns", "/x", "ls"], "--userns"),
            (&["0"], "PID"),
        ] {
            bad(Mode::Pasta, args, needle);
        }
    }

    #[test]
    fn pasta_positionals() {
        let o = ok(Mode::Pasta, &["-f", "ls", "-l", "--color", "-t", "22"]);
        assert!(o.foreground);
        assert!(
            o.tcp_ports.is_empty(),
            "options after the command are its own"
        );
        assert_eq!(
            o.target,
            Some(PastaTarget::Spawn(
                ["ls", "-l", "--color", "-t", "22"]
                    .iter()
                    .map(OsString::from)
                    .collect()
            ))
        );
        let o = ok(Mode::Pasta, &["--", "-weird", "x"]);
        assert_eq!(
            o.target,
            Some(PastaTarget::Spawn(vec!["-weird".into(), "x".into()]))
        );
        let o = ok(Mode::Pasta, &["-t", "22", "4242"]);
        assert_eq!(o.target, Some(PastaTarget::Pid(4242)));
        let o = ok(Mode::Pasta, &["4242", "x"]);
        assert!(matches!(o.target, Some(PastaTarget::Spawn(_))));
        let o = ok(Mode::Pasta, &["--netns", "foo"]);
        assert_eq!(
            o.target,
            Some(PastaTarget::Netns(PathBuf::from("/run/netns/foo")))
        );
        assert!(o.netns_only);
        let o = ok(
            Mode::Pasta,
            &["--netns", "/proc/1/ns/net", "--userns", "/u"],
        );
        assert_eq!(
            o.target,
            Some(PastaTarget::Netns(PathBuf::from("/proc/1/ns/net")))
        );
        assert!(!o.netns_only);
    }

    #[test]
    fn help_and_version() {
        for m in [Mode::Passt, Mode::Pasta] {
            for a in ["-h", "--help", "--version"] {
                assert_eq!(parse(m, &[a]), Err(CliError::Exit(0)), "{a}");
            }
        }
        let h = command(Mode::Passt).render_long_help().to_string();
        assert!(h.contains("--socket"));
        assert!(!h.contains("--ns-ifname"));
        let h = command(Mode::Pasta).render_long_help().to_string();
        assert!(h.contains("--ns-ifname"));
        assert!(!h.contains("--vhost-user"));
        assert!(h.contains("COMMAND"));
    }

    proptest::proptest! {
        /// No command line makes the parser panic; errors are one line.
        #[test]
        fn no_panic(args in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec![
                    "-t", "-u", "-T", "-U", "-a", "-g", "-m", "-n", "-D", "-S", "-F", "-I",
                    "--netns", "--userns", "--config-net", "--no-copy-routes", "-4", "-6",
                    "--map-host-loopback", "--runas", "--log-size", "-s", "-1", "-d", "-q",
                    "--", "none", "auto", "all", "0", "22", "::1",
                ]).prop_map(String::from),
                "[-a-z0-9:.,~/%\\[\\]]{0,12}",
            ],
            0..8,
        )) {
            for mode in [Mode::Passt, Mode::Pasta] {
                let v: Vec<OsString> = args.iter().map(OsString::from).collect();
                if let Err(CliError::Usage(m)) = parse_args(mode, &v) {
                    proptest::prop_assert!(!m.contains('\n'), "{m}");
                }
            }
        }

        /// Every prefix length survives netmask formatting and parsing.
        #[test]
        fn netmask_round_trip(p in 0u8..=32) {
            let m = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0));
            proptest::prop_assert_eq!(parse_netmask(&m.to_string()), Ok(p));
            proptest::prop_assert_eq!(parse_netmask(&p.to_string()), Ok(p));
        }
    }

    #[test]
    fn netmask_forms() {
        for (s, p) in [
            ("0", 0),
            ("32", 32),
            ("8", 8),
            ("255.255.255.0", 24),
            ("255.255.255.255", 32),
            ("0.0.0.0", 0),
            ("255.255.254.0", 23),
        ] {
            assert_eq!(parse_netmask(s), Ok(p), "{s}");
        }
        for s in ["33", "-1", "255.0.255.0", "0.255.255.255", "", "+8"] {
            assert!(parse_netmask(s).is_err(), "{s}");
        }
    }

    #[test]
    fn map_per_family() {
        use AddrOrNone::*;
        let v = [
            Addr("192.0.2.1".parse().unwrap()),
            Addr("fd00::1".parse().unwrap()),
        ];
        assert_eq!(map_v4(&v), Some(Some("192.0.2.1".parse().unwrap())));
        assert_eq!(map_v6(&v), Some(Some("fd00::1".parse().unwrap())));
        assert_eq!(map_v4(&[]), Option::None);
        assert_eq!(map_v6(&[v[0], None]), Some(Option::None));
    }
}

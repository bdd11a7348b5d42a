//! Parsers of single option values (addresses, sizes, names, paths), each
//! refusing a bad value with a message clap shows next to the option.

use super::*;

pub(super) fn no_unspec_etc(a: IpAddr, loopback_ok: bool, what: &str) -> Result<IpAddr, String> {
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

pub(super) fn is_v4_compat(v: Ipv6Addr) -> bool {
    let s = v.segments();
    s[..6].iter().all(|x| *x == 0) && !v.is_unspecified() && !v.is_loopback()
}

pub(super) fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("'{s}' is not an IPv4 or IPv6 address"))
}

/// `-a ADDR[/PREFIX]`.
pub(super) fn parse_assign_addr(s: &str) -> Result<GuestAddr, String> {
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
pub(super) fn parse_dns_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > NAME_MAX {
        return Err(format!("the name must have 1 to {NAME_MAX} bytes"));
    }
    name_without(s, |c| c.is_control() || c.is_whitespace(), "a host name")
}

/// `s` as a name, refused as not `what` if any of its characters is `bad`.
fn name_without(s: &str, bad: fn(char) -> bool, what: &str) -> Result<String, String> {
    if s.chars().any(bad) {
        return Err(format!("'{s}' is not {what}"));
    }
    Ok(s.to_string())
}

pub(super) fn parse_gateway(s: &str) -> Result<IpAddr, String> {
    no_unspec_etc(ip(s)?, false, "a gateway")
}

pub(super) fn parse_outbound(s: &str) -> Result<IpAddr, String> {
    no_unspec_etc(ip(s)?, false, "an outbound address")
}

pub(super) fn parse_dns(s: &str) -> Result<AddrOrNone, String> {
    if s == "none" || s.is_empty() {
        return Ok(AddrOrNone::None);
    }
    let a = s
        .parse::<IpAddr>()
        .map_err(|_| format!("'{s}' is neither 'none' nor an address"))?;
    no_unspec_etc(a, true, "a nameserver").map(AddrOrNone::Addr)
}

pub(super) fn parse_search(s: &str) -> Result<String, String> {
    if s.len() > crate::resolv::MAX_DOMAIN {
        return Err("domain name too long".into());
    }
    name_without(s, |c| c.is_control() && !c.is_whitespace(), "a domain name")
}

pub(super) fn parse_dns_forward(s: &str) -> Result<IpAddr, String> {
    no_unspec_etc(ip(s)?, false, "a DNS forwarding address")
}

pub(super) fn parse_dns_host(s: &str) -> Result<IpAddr, String> {
    no_unspec_etc(ip(s)?, true, "a host nameserver")
}

pub(super) fn parse_map(s: &str) -> Result<AddrOrNone, String> {
    if s == "none" {
        return Ok(AddrOrNone::None);
    }
    no_unspec_etc(ip(s)?, false, "a mapped address").map(AddrOrNone::Addr)
}

pub(super) fn parse_mtu(s: &str) -> Result<u16, String> {
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

pub(super) fn parse_mac(s: &str) -> Result<Mac, String> {
    Mac::parse(s).ok_or_else(|| format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

pub(super) fn parse_ifname(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > IFNAME_MAX || s.contains('/') || s.contains(char::is_whitespace) {
        return Err(format!(
            "'{s}' is not a valid interface name (1 to {IFNAME_MAX} characters)"
        ));
    }
    Ok(s.to_string())
}

pub(super) fn parse_fd(s: &str) -> Result<i32, String> {
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

pub(super) fn parse_log_size(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of bytes"))?;
    if v < LOG_SIZE_MIN {
        return Err(format!("the minimum is {LOG_SIZE_MIN} bytes"));
    }
    Ok(v)
}

pub(super) fn id_or_name(s: &str) -> Result<IdOrName, String> {
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

pub(super) fn parse_runas(s: &str) -> Result<RunAs, String> {
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

pub(super) fn parse_socket_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() || s.len() > SOCKET_PATH_MAX {
        return Err(format!(
            "the socket path must have 1 to {SOCKET_PATH_MAX} bytes"
        ));
    }
    Ok(PathBuf::from(s))
}

pub(super) fn parse_nonempty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(s))
}

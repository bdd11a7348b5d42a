//! Reading the host's resolver configuration (`/etc/resolv.conf`).
//!
//! Only `nameserver` lines and the first `search` line matter. A scope suffix
//! (`fe80::1%eth0`) is dropped; lines that do not parse are skipped. A missing
//! or unreadable file gives an empty configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Default location of the resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Longest domain name kept from a `search` line (`NS_MAXDNAME`).
pub const MAX_DOMAIN: usize = 1025;

/// Nameservers and search domains of the host, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolv {
    /// IPv4 nameservers.
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 nameservers.
    pub v6: Vec<Ipv6Addr>,
    /// Domains of the first `search` line.
    pub search: Vec<String>,
}

/// Parses the text of a resolv.conf file.
pub fn parse_resolv(text: &str) -> Resolv {
    let mut r = Resolv::default();
    let mut have_search = false;
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default().trim();
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(a) = words.next() else { continue };
                let a = a.split('%').next().unwrap_or_default();
                match a.parse::<IpAddr>() {
                    Ok(IpAddr::V4(v)) if !r.v4.contains(&v) => r.v4.push(v),
                    Ok(IpAddr::V6(v)) if !r.v6.contains(&v) => r.v6.push(v),
                    _ => {}
                }
            }
            Some("search") if !have_search => {
                have_search = true;
                r.search = words
                    .filter(|d| d.len() <= MAX_DOMAIN)
                    .map(str::to_string)
                    .collect();
            }
            _ => {}
        }
    }
    r
}

/// Reads and parses `path`; an empty [`Resolv`] if it can't be read.
pub fn read_resolv(path: &Path) -> Resolv {
    match std::fs::read(path) {
        Ok(b) => parse_resolv(&String::from_utf8_lossy(&b)),
        Err(_) => Resolv::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cases() {
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            ("", &[], &[], &[]),
            (
                "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
                &["127.0.0.53"],
                &[],
                &["lan"],
            ),
            ("nameserver ::1\n", &[], &["::1"], &[]),
            (
                "nameserver fe80::1%eth0\nnameserver 192.0.2.53\n",
                &["192.0.2.53"],
                &["fe80::1"],
                &[],
            ),
            (
                "# comment\n; other comment\nnameserver 192.0.2.1 # trailing\n\
                 #nameserver 192.0.2.9\n  nameserver\t192.0.2.2  \n",
                &["192.0.2.1", "192.0.2.2"],
                &[],
                &[],
            ),
            (
                "search a.example b.example\nsearch c.example\n",
                &[],
                &[],
                &["a.example", "b.example"],
            ),
            (
                "nameserver bogus\nnameserver\nnameserver 300.1.1.1\nnameserver 192.0.2.1\n",
                &["192.0.2.1"],
                &[],
                &[],
            ),
            (
                "nameserver 192.0.2.1\nnameserver 192.0.2.1\nnameserver 2001:db8::53\n",
                &["192.0.2.1"],
                &["2001:db8::53"],
                &[],
            ),
            ("domain example.org\nnameserverx 192.0.2.1\n", &[], &[], &[]),
        ];
        for (text, n4, n6, search) in cases {
            let r = parse_resolv(text);
            let e4: Vec<_> = n4.iter().map(|s| v4(s)).collect();
            let e6: Vec<_> = n6.iter().map(|s| v6(s)).collect();
            assert_eq!(r.v4, e4, "{text:?}");
            assert_eq!(r.v6, e6, "{text:?}");
            assert_eq!(r.search, *search, "{text:?}");
        }
    }

    proptest::proptest! {
        /// Nameserver lines come back in order, without duplicates, whatever
        /// surrounds them.
        #[test]
        fn nameservers_round_trip(
            ns in proptest::collection::vec(proptest::prelude::any::<std::net::IpAddr>(), 0..8),
            junk in "[ -~\t]{0,40}",
        ) {
            let mut text = String::new();
            for a in &ns {
                text += &format!("# {junk}\nnameserver {a}\n;{junk}\n");
            }
            let r = parse_resolv(&text);
            let mut e4 = Vec::new();
            let mut e6 = Vec::new();
            for a in ns {
                match a {
                    IpAddr::V4(v) if !e4.contains(&v) => e4.push(v),
                    IpAddr::V6(v) if !e6.contains(&v) => e6.push(v),
                    _ => {}
                }
            }
            proptest::prop_assert_eq!(r.v4, e4);
            proptest::prop_assert_eq!(r.v6, e6);
        }

        /// Arbitrary bytes never make the parser panic.
        #[test]
        fn no_panic(text in "(?s).{0,200}") {
            let _ = parse_resolv(&text);
        }
    }

    #[test]
    fn missing_file() {
        let r = read_resolv(Path::new("/nonexistent/resolv.conf"));
        assert_eq!(r, Resolv::default());
    }

    #[test]
    fn file() {
        let dir = std::env::temp_dir().join(format!("resolv-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("resolv.conf");
        std::fs::write(&p, b"nameserver 198.51.100.1\nsearch x.test\n\xff\n").unwrap();
        let r = read_resolv(&p);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r.v4, vec![v4("198.51.100.1")]);
        assert_eq!(r.search, vec!["x.test".to_string()]);
    }
}

use super::*;
use crate::fwd::FwdMode;
use crate::netlink::testns::{assert_contains, in_netns, ip, ip_out};
use crate::resolv::parse_resolv;
use passt_core::Forward;
use std::ffi::OsString;

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn na(s: &str, prefix: u8) -> NsAddr {
    NsAddr { addr: a(s), prefix }
}
fn rt(dst: &str, prefix: u8, gw: Option<&str>) -> NsRoute {
    match gw {
        Some(g) => NsRoute::via(a(dst), prefix, a(g)),
        None => NsRoute::direct(a(dst), prefix),
    }
}

fn host() -> HostInfo {
    HostInfo {
        v4: Some(HostFamily {
            ifname: "eth0".into(),
            ifindex: 2,
            mtu: 1500,
            addrs: vec![na("192.0.2.2", 24), na("10.1.2.3", 8)],
            gateway: Some(a("192.0.2.1")),
            link_local: None,
            routes: vec![
                rt("0.0.0.0", 0, Some("192.0.2.1")),
                rt("192.0.2.0", 24, None),
                rt("203.0.113.0", 24, Some("192.0.2.254")),
            ],
        }),
        v6: Some(HostFamily {
            ifname: "eth0".into(),
            ifindex: 2,
            mtu: 1500,
            addrs: vec![na("2001:db8::2", 64)],
            gateway: Some(a("fe80::1")),
            link_local: Some(a("fe80::2")),
            routes: vec![rt("::", 0, Some("fe80::1")), rt("2001:db8::", 64, None)],
        }),
        ephemeral: (32768, 60999),
        no_ipv6: false,
        notes: vec![],
    }
}

fn opts(mode: Mode, args: &[&str]) -> Options {
    let v: Vec<OsString> = args.iter().map(OsString::from).collect();
    crate::cli::parse_args(mode, &v).unwrap()
}

fn cfg(mode: Mode, args: &[&str], host: &HostInfo, resolv: &str) -> RuntimeConfig {
    build(mode, &opts(mode, args), host, &parse_resolv(resolv))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The configuration `build` makes of pasta's `args` on [`host`], with no
/// resolv.conf.
fn pasta(args: &[&str]) -> RuntimeConfig {
    cfg(Mode::Pasta, args, &host(), "")
}

/// The error of `build` for `args`, which it must refuse.
fn refused(mode: Mode, args: &[&str], host: &HostInfo) -> String {
    match build(mode, &opts(mode, args), host, &parse_resolv("")) {
        Ok(_) => panic!("{args:?}: accepted"),
        Err(e) => e,
    }
}

fn link(index: u32, name: &str, flags: u32) -> LinkInfo {
    LinkInfo {
        index,
        name: name.into(),
        mtu: 1500,
        flags,
        mac: None,
    }
}

fn route(dst: &str, prefix: u8, hops: &[(u32, Option<&str>, u16)]) -> RouteInfo {
    RouteInfo {
        dst: a(dst),
        prefix,
        table: netlink::TABLE_MAIN,
        kind: netlink::RTN_UNICAST,
        protocol: 4,
        scope: if hops.iter().all(|h| h.1.is_none()) {
            SCOPE_LINK
        } else {
            SCOPE_UNIVERSE
        },
        tos: 0,
        metric: None,
        hops: hops
            .iter()
            .map(|(i, g, w)| netlink::NextHop {
                ifindex: *i,
                gateway: g.map(a),
                weight: *w,
                onlink: false,
            })
            .collect(),
        metrics: vec![],
        pref: None,
        encap: false,
    }
}

mod build;
mod discovery;
mod template;

//! Set-up directives (`sim config`, `sim peer`, `sim link`, …) and the
//! parsers of their arguments.

use super::*;

pub(super) fn parse_mac(s: &str) -> Result<MacAddr, String> {
    Mac::parse(s)
        .map(|m| m.0)
        .ok_or_else(|| format!("bad MAC `{s}`"))
}

pub(super) fn parse_sa(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("bad address `{s}` (want ip:port or [ip6]:port)"))
}

pub(super) fn num<T: std::str::FromStr>(s: Option<&String>, what: &str) -> Result<T, String> {
    let s = s.ok_or_else(|| format!("{what}: value missing"))?;
    let s = s.trim_start_matches("0x");
    s.parse().map_err(|_| format!("{what}: bad value `{s}`"))
}

pub(super) fn parse_prob(s: Option<&String>, what: &str) -> Result<f64, String> {
    let v: f64 = num(s, what)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{what}: probability out of range"));
    }
    Ok(v)
}

/// Applies link settings `words` (`loss P dup P reorder P window MS delay MS
/// jitter MS corrupt P mtu N`) to `p`.
pub fn apply_link(p: &mut LinkProfile, words: &[String]) -> Result<(), String> {
    let mut i = 0;
    while i < words.len() {
        let k = words[i].as_str();
        let v = words.get(i + 1);
        let ms = |v| -> Result<u64, String> { Ok((num::<f64>(v, k)? * 1e6) as u64) };
        match k {
            "loss" => p.loss = parse_prob(v, k)?,
            "dup" => p.dup = parse_prob(v, k)?,
            "reorder" => p.reorder = parse_prob(v, k)?,
            "corrupt" => p.corrupt = parse_prob(v, k)?,
            "window" => p.reorder_ns = ms(v)?,
            "delay" => p.delay_ns = ms(v)?,
            "jitter" => p.jitter_ns = ms(v)?,
            "mtu" => p.mtu = Some(num(v, k)?),
            _ => return Err(format!("unknown link setting `{k}`")),
        }
        i += 2;
    }
    Ok(())
}

/// `*` (any) or a `what` of a peer rule.
fn any_or<T: std::str::FromStr>(s: &str, what: &str) -> Result<Option<T>, String> {
    if s == "*" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("peer: bad {what} `{s}`"))
}

pub(super) fn parse_peer(words: &[String]) -> Result<PeerRule, String> {
    let target = words.first().ok_or("peer: address missing")?;
    let (addr, port) = match target.rsplit_once(':') {
        Some((a, p)) => (a.trim_start_matches('[').trim_end_matches(']'), p),
        None if target == "*" => ("*", "*"),
        None => return Err(format!("peer: bad target `{target}`")),
    };
    let addr: Option<IpAddr> = any_or(addr, "address")?;
    let port: Option<u16> = any_or(port, "port")?;
    let rest: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    // The model's words, then options with a value in milliseconds.
    let keys = ["delay", "rtt", "fast-at"];
    let split = rest
        .iter()
        .position(|w| keys.contains(w))
        .unwrap_or(rest.len());
    let model = PeerModel::parse(&rest[..split])?;
    let mut spec = PeerSpec::new(model);
    let mut opts = rest[split..].iter();
    while let Some(&k) = opts.next() {
        let v = opts
            .next()
            .ok_or_else(|| format!("peer: {k} value missing"))?;
        let ns = (v
            .parse::<f64>()
            .map_err(|_| format!("peer: bad {k} `{v}`"))?
            * 1e6) as u64;
        match k {
            "delay" => spec.connect_delay_ns = ns,
            "rtt" => spec.rtt_ns = ns,
            "fast-at" => spec.fast_at_ns = Some(ns),
            _ => return Err(format!("peer: unknown option `{k}`")),
        }
    }
    Ok(PeerRule { addr, port, spec })
}

// Long by design: one arm per set-up directive of the scenario dialect.
pub(super) fn setup_directive(s: &mut Setup, w: &[String]) -> Result<bool, String> {
    let c = &mut s.cfg;
    match w.first().map(String::as_str) {
        Some("config") => {
            for item in &w[1..] {
                match item.as_str() {
                    "capture" => c.core = capture_config(),
                    "default" => c.core = Config::default(),
                    "no-dhcp" => c.core.features.dhcp = false,
                    "no-ndp" => c.core.features.ndp = false,
                    "no-dhcpv6" => c.core.features.dhcpv6 = false,
                    "no-ra" => c.core.features.ra = false,
                    "no-tcp" => c.core.features.tcp = false,
                    "no-udp" => c.core.features.udp = false,
                    "no-icmp" => c.core.features.icmp = false,
                    "no-ipv4" => c.core.ip4 = None,
                    "no-ipv6" => c.core.ip6 = None,
                    "peek-offset" => c.core.peek_offset = true,
                    // A guest link with virtio-net headers (pasta's tap):
                    // partial checksums and TCP segmentation offload.
                    "tap-offload" => c.core.link_offload = passt_core::LinkOffload::ALL,
                    other if other.starts_with("tcp-policy=") => {
                        let v = &other["tcp-policy=".len()..];
                        c.core.tcp = passt_core::TcpPolicy::named(v).ok_or_else(|| {
                            format!(
                                "unknown TCP policy `{v}` (known: {})",
                                passt_core::TcpPolicy::NAMES.join(", ")
                            )
                        })?;
                    }
                    other => {
                        if let Some(v) = other.strip_prefix("mtu=") {
                            c.core.mtu = Some(v.parse().map_err(|_| format!("bad mtu `{v}`"))?);
                        } else if let Some((proto, v)) = other
                            .strip_prefix("forward=")
                            .map(|v| (Proto::Tcp, v))
                            .or_else(|| other.strip_prefix("udp-forward=").map(|v| (Proto::Udp, v)))
                        {
                            // forward=PORT[:TARGET] (TCP), udp-forward=PORT[:TARGET]
                            let (p, t) = v.split_once(':').unwrap_or((v, v));
                            let port = p.parse().map_err(|_| format!("bad port `{p}`"))?;
                            let target_port = t.parse().map_err(|_| format!("bad port `{t}`"))?;
                            c.core.forwards.push(passt_core::Forward::new(
                                proto,
                                port,
                                target_port,
                            ));
                        } else if let Some(v) = other.strip_prefix("guest-mac=") {
                            c.core.guest_mac = Some(Mac(parse_mac(v)?));
                        } else {
                            return Err(format!("unknown config item `{other}`"));
                        }
                    }
                }
            }
        }
        Some("seed") => c.seed = num(w.get(1), "seed")?,
        Some("faults") => s.faults = Some(w.get(1).ok_or("faults: profile missing")?.clone()),
        Some("link") => {
            let dir = w.get(1).map(String::as_str);
            let rest = &w[2.min(w.len())..];
            match dir {
                Some("to-core") => apply_link(&mut c.to_core, rest)?,
                Some("to-guest") => apply_link(&mut c.to_guest, rest)?,
                Some("both") => {
                    apply_link(&mut c.to_core, rest)?;
                    apply_link(&mut c.to_guest, rest)?;
                }
                _ => return Err("link: say to-core, to-guest or both".into()),
            }
        }
        Some("host") => {
            let mut i = 1;
            while i < w.len() {
                let v = w.get(i + 1);
                match w[i].as_str() {
                    "sndbuf" => c.kernel.sndbuf = num(v, "sndbuf")?,
                    "rcvbuf" => c.kernel.rcvbuf = num(v, "rcvbuf")?,
                    "fd-limit" => c.kernel.fd_limit = num(v, "fd-limit")?,
                    "connect-timeout" => {
                        c.kernel.connect_timeout_ns =
                            (num::<f64>(v, "connect-timeout")? * 1e6) as u64
                    }
                    k => return Err(format!("unknown host setting `{k}`")),
                }
                i += 2;
            }
        }
        Some("peer") => c.kernel.peers.push(parse_peer(&w[1..])?),
        Some("default-peer") => {
            c.kernel.default_peer = parse_peer(&[&["*".to_string()], &w[1..]].concat())?.spec
        }
        Some("known-violation") => s.known.push(w[1..].join(" ")),
        Some("sweep-known") => s.sweep_known.push(w[1..].join(" ")),
        Some("settle") => {
            s.settle = Duration::from_nanos((num::<f64>(w.get(1), "settle")? * 1e6) as u64)
        }
        Some("heal") => s.heal = Duration::from_nanos((num::<f64>(w.get(1), "heal")? * 1e6) as u64),
        _ => return Ok(false),
    }
    Ok(true)
}

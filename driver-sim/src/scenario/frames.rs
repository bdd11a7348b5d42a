//! Guest frames: building `<` lines and matching `>` lines.

use super::*;

impl Runner<'_> {
    pub(super) fn fail(&mut self, no: usize, m: String) {
        let m = format!("line {no}: {m}");
        self.sim.note("FAIL", &m);
        self.failures.push(m);
    }

    pub(super) fn guest_ip4(&self) -> Ipv4Addr {
        self.sim
            .core
            .config()
            .ip4
            .as_ref()
            .map_or(Ipv4Addr::new(10, 0, 2, 15), |c| c.addr)
    }

    // Long by design: one arm per frame kind of the scenario dialect (raw, arp, dhcp,
    // dhcpv6, ns, rs, ping, udp, TCP); the arms are the grammar.
    pub(super) fn build_frame(&mut self, spec: &str) -> Result<Vec<u8>, String> {
        let mut words: Vec<&str> = spec.split_whitespace().collect();
        let mods = Modifiers::strip(&mut words)?;
        let gm = self.guest_mac;
        let om = self.our_mac;
        let kv = |key: &str| -> Option<&str> {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|p| words.get(p + 1))
                .copied()
        };
        let first = *words.first().ok_or("empty frame")?;
        let mut f = match first {
            "raw" => {
                let hex: String = words[1..].concat();
                if !hex.is_ascii() || !hex.len().is_multiple_of(2) {
                    return Err("raw: want an even number of hex digits".into());
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        u8::from_str_radix(&hex[i..i + 2], 16)
                            .map_err(|_| "raw: bad hex".to_string())
                    })
                    .collect::<Result<Vec<u8>, String>>()?
            }
            "arp" => {
                let target: Ipv4Addr =
                    parse_word(kv("who-has"), "arp: who-has missing", "arp: bad address")?;
                let tell = opt_word(kv("tell"), "arp: bad tell address")?
                    .unwrap_or_else(|| self.guest_ip4());
                frame::arp_request(gm, tell, target)
            }
            "dhcp" => {
                let (kind, xid) =
                    dhcp_head(&words, kv("xid"), "dhcp", frame::dhcp_type, 0x1234_5678)?;
                let req = kv("requested")
                    .map(|a| a.parse::<Ipv4Addr>())
                    .transpose()
                    .map_err(|_| "dhcp: bad address")?;
                frame::dhcp_client(gm, kind, xid, req)
            }
            "dhcpv6" => {
                let (kind, xid) =
                    dhcp_head(&words, kv("xid"), "dhcpv6", frame::dhcpv6_type, 0xabcdef)?;
                let sid = kv("server-id")
                    .map(|h| {
                        (0..h.len() / 2)
                            .map(|i| {
                                u8::from_str_radix(h.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                            })
                            .collect::<Result<Vec<u8>, _>>()
                    })
                    .transpose()
                    .map_err(|_| "dhcpv6: bad server-id")?;
                frame::dhcpv6_client(gm, kind, xid, sid.as_deref())
            }
            "ns" => {
                let target: Ipv6Addr = first_arg(&words, "ns", "target")?;
                let from = opt_word(kv("from"), "ns: bad source")?
                    .unwrap_or_else(|| frame::link_local(gm));
                frame::ndp_ns(gm, from, target)
            }
            "rs" => frame::ndp_rs(gm),
            "ping" => {
                let dst: IpAddr = first_arg(&words, "ping", "destination")?;
                let src: IpAddr = match opt_word(kv("from"), "ping: bad source")? {
                    Some(a) => a,
                    None if dst.is_ipv4() => self.guest_ip4().into(),
                    None => self
                        .sim
                        .core
                        .config()
                        .ip6
                        .as_ref()
                        .map_or(frame::link_local(gm), |c| c.addr)
                        .into(),
                };
                let id = opt_word(kv("id"), "ping: bad id")?.unwrap_or(1);
                let seq = opt_word(kv("seq"), "ping: bad seq")?.unwrap_or(1);
                let len = opt_word(kv("len"), "ping: bad len")?.unwrap_or(56);
                frame::echo_request(gm, om, src, dst, id, seq, len)
            }
            "udp" => {
                // udp SRC > DST (LEN)
                let src = parse_sa(words.get(1).ok_or("udp: source missing")?)?;
                let dst = parse_sa(words.get(3).ok_or("udp: destination missing")?)?;
                let len: usize = words
                    .get(4)
                    .map(|l| l.trim_start_matches('(').trim_end_matches(')'))
                    .map_or(Ok(0), str::parse)
                    .map_err(|_| "udp: bad length")?;
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                frame::udp_frame(gm, om, src, dst, &payload)
            }
            _ => self.tcp_frame(&words)?,
        };
        mods.apply(&mut f);
        Ok(f)
    }

    fn tcp_frame(&mut self, w: &[&str]) -> Result<Vec<u8>, String> {
        let flow = self.flow.ok_or("TCP line before `sim flow`")?;
        let remote = flow
            .remote
            .ok_or("TCP line before the remote end of `sim flow ... auto` is known")?;
        let fl = parse_flags(w.first().ok_or("TCP: flags missing")?)?;
        let (start, _end, len) = parse_seq(w.get(1).ok_or("TCP: seq missing")?)?;
        let ack = match w.iter().position(|x| *x == "ack") {
            Some(p) => {
                let a: u32 = w
                    .get(p + 1)
                    .ok_or("TCP: ack value missing")?
                    .parse()
                    .map_err(|_| "TCP: bad ack")?;
                let isn = self.expect_seqs_isn(flow);
                a.wrapping_add(isn)
            }
            None => 0,
        };
        let win = match w.iter().position(|x| *x == "win") {
            Some(p) => w
                .get(p + 1)
                .ok_or("TCP: win value missing")?
                .parse()
                .map_err(|_| "TCP: bad win")?,
            None => 65535,
        };
        let opts = match options_text(w) {
            Some(inner) => frame::tcp_options(&inner)?,
            None => Vec::new(),
        };
        let payload: Vec<u8> = (0..len)
            .map(|k| crate::kernel::pattern(0, 9, u64::from(start) + u64::from(k)))
            .collect();
        Ok(frame::tcp_frame(
            self.guest_mac,
            self.our_mac,
            flow.guest,
            remote,
            GUEST_ISN.wrapping_add(start),
            ack,
            fl,
            win,
            &opts,
            &payload,
        ))
    }

    /// The core's ISN on the current flow (from its SYN seen by the guest).
    fn expect_seqs_isn(&mut self, flow: FlowCtx) -> u32 {
        // rel_ack with the core's direction known gives ack - isn; recover isn.
        // The core's ISN as seen on the wire (whether or not a `>` line
        // matched its SYN).
        match flow.remote {
            Some(r) => self
                .sim
                .core_isn(r, flow.guest)
                .unwrap_or_else(|| self.expect_seqs.rel_ack(flow.guest, r, 0).wrapping_neg()),
            None => 0,
        }
    }

    pub(super) fn expect(&mut self, no: usize, at: Time, pattern: &str) {
        if self.opts.lenient {
            return;
        }
        if self.sim.guest_inbox.is_empty() {
            self.fail(no, format!("expected `> {pattern}` but no frame arrived"));
            return;
        }
        let (t, f) = self.sim.guest_inbox.remove(0);
        let summary = frame::summarize(&f, &mut self.expect_seqs);
        if let Time::Any = at {
        } else if self.sim.now().as_nanos().abs_diff(t.as_nanos()) > self.tolerance_ns {
            self.fail(
                no,
                format!(
                    "`> {pattern}` arrived at {t:?}, expected at {:?}",
                    self.sim.now()
                ),
            );
        }
        let words: Vec<&str> = pattern.split_whitespace().collect();
        let res = if words.first().is_some_and(|w| parse_flags(w).is_ok())
            && words.get(1).is_some_and(|w| parse_seq(w).is_ok())
        {
            self.match_tcp(&words, &f)
        } else {
            match_words(&words, &summary)
        };
        if let Err(e) = res {
            self.fail(no, format!("expected `> {pattern}`, got `{summary}`: {e}"));
        }
    }

    fn match_tcp(&mut self, w: &[&str], f: &[u8]) -> Result<(), String> {
        let mut flow = self.flow.ok_or("TCP line before `sim flow`")?;
        let t = frame::parse_tcp(f).ok_or("not a TCP segment")?;
        if flow.remote.is_none() && t.dst == flow.guest {
            flow.remote = Some(t.src);
            self.flow = Some(flow);
        }
        if Some(t.src) != flow.remote || t.dst != flow.guest {
            return Err(format!("segment of {} > {}", t.src, t.dst));
        }
        let exact = w.contains(&"exact");
        let want = parse_flags(w[0])?;
        let mask = if exact { 0xff } else { !flags::PSH };
        if t.flags & mask != want & mask {
            return Err(format!(
                "flags {} instead of {}",
                frame::flag_str(t.flags),
                w[0]
            ));
        }
        let (start, end, len) = parse_seq(w[1])?;
        let mut tr = self.expect_seqs.clone();
        let rel = tr.rel_seq(t.src, t.dst, t.seq, false);
        if rel != start || t.payload.len() as u32 != len || rel.wrapping_add(len) != end {
            return Err(format!(
                "seq {}:{}({})",
                rel,
                rel.wrapping_add(t.payload.len() as u32),
                t.payload.len()
            ));
        }
        if let Some(p) = w.iter().position(|x| *x == "ack") {
            let a: u32 = w.get(p + 1).and_then(|v| v.parse().ok()).ok_or("bad ack")?;
            let got = t.ack.wrapping_sub(GUEST_ISN);
            if got != a || t.flags & flags::ACK == 0 {
                return Err(format!("ack {got}"));
            }
        }
        if let Some(p) = w.iter().position(|x| *x == "win") {
            let v: u16 = w.get(p + 1).and_then(|v| v.parse().ok()).ok_or("bad win")?;
            if t.win != v {
                return Err(format!("win {}", t.win));
            }
        }
        if let Some(inner) = options_text(w) {
            if inner != "..." {
                let want = frame::tcp_options(&inner)?;
                let fake = frame::tcp_frame(
                    GUEST_MAC,
                    GUEST_MAC,
                    flow.guest,
                    t.src,
                    0,
                    0,
                    0,
                    0,
                    &want,
                    &[],
                );
                let want_s = frame::parse_tcp(&fake).map(|s| s.opts).unwrap_or_default();
                if want_s != t.opts {
                    return Err(format!("options <{}>", t.opts));
                }
            }
        }
        Ok(())
    }
}

/// The message type (`words[1]`) and transaction id (`xid`, hex) of a DHCP
/// or DHCPv6 frame line.
fn dhcp_head(
    words: &[&str],
    xid: Option<&str>,
    proto: &str,
    type_of: fn(&str) -> Option<u8>,
    default_xid: u32,
) -> Result<(u8, u32), String> {
    let kind = words
        .get(1)
        .and_then(|k| type_of(k))
        .ok_or_else(|| format!("{proto}: message type missing"))?;
    let xid = xid
        .map_or(Ok(default_xid), |x| {
            u32::from_str_radix(x.trim_start_matches("0x"), 16)
        })
        .map_err(|_| format!("{proto}: bad xid"))?;
    Ok((kind, xid))
}

/// Modifiers at the end of a frame line: `truncate N`, `pad N`, `badsum`.
struct Modifiers {
    truncate: Option<usize>,
    badsum: bool,
    pad: Option<usize>,
}

impl Modifiers {
    /// Takes the modifiers off the end of `words`.
    fn strip(words: &mut Vec<&str>) -> Result<Modifiers, String> {
        let mut truncate = None;
        let mut badsum = false;
        let mut pad = None;
        loop {
            match words.as_slice() {
                [rest @ .., "truncate", n] => {
                    truncate = Some(
                        n.parse::<usize>()
                            .map_err(|_| format!("bad truncate `{n}`"))?,
                    );
                    *words = rest.to_vec();
                }
                [rest @ .., "pad", n] => {
                    pad = Some(n.parse::<usize>().map_err(|_| format!("bad pad `{n}`"))?);
                    *words = rest.to_vec();
                }
                [rest @ .., "badsum"] => {
                    badsum = true;
                    *words = rest.to_vec();
                }
                _ => break,
            }
        }
        Ok(Modifiers {
            truncate,
            badsum,
            pad,
        })
    }

    /// Damages, cuts or pads a built frame as asked.
    fn apply(&self, f: &mut Vec<u8>) {
        if self.badsum {
            if let Some(b) = f.last_mut() {
                *b ^= 0x5a;
            }
        }
        if let Some(n) = self.truncate {
            f.truncate(n);
        }
        if let Some(n) = self.pad {
            f.resize(f.len() + n, 0);
        }
    }
}

/// A word of a frame line parsed as a `T`, with the errors to give when it
/// is missing or does not parse.
fn parse_word<T: std::str::FromStr>(
    w: Option<&str>,
    missing: &str,
    bad: &str,
) -> Result<T, String> {
    w.ok_or(missing)?.parse().map_err(|_| bad.to_string())
}

/// An optional word of a frame line parsed as a `T`, with the error to give
/// when it does not parse.
fn opt_word<T: std::str::FromStr>(w: Option<&str>, bad: &str) -> Result<Option<T>, String> {
    w.map(str::parse).transpose().map_err(|_| bad.to_string())
}

/// The word after the frame kind parsed as a `T`: `PROTO: NAME missing` or
/// `PROTO: bad NAME` if it is not there or does not parse.
fn first_arg<T: std::str::FromStr>(words: &[&str], proto: &str, name: &str) -> Result<T, String> {
    parse_word(
        words.get(1).copied(),
        &format!("{proto}: {name} missing"),
        &format!("{proto}: bad {name}"),
    )
}

/// The text between `<` and `>` of a TCP line (its options), if it has any.
fn options_text(w: &[&str]) -> Option<String> {
    let p = w.iter().position(|x| x.starts_with('<'))?;
    let joined = w[p..].join(" ");
    Some(
        joined
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap_or("")
            .to_string(),
    )
}

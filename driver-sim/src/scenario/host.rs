//! Directives during a run (`sim check`, `sim pcap`, …) and the scripted
//! host application's syscalls.

use super::*;

impl Runner<'_> {
    // Long by design: one arm per run-time directive of the scenario dialect; the arms are
    // the reference `docs/simulator.md` documents.
    pub(super) fn directive(&mut self, no: usize, w: &[String]) {
        // Host-side directives belong to a realized run too; guest-side ones
        // (model endpoints, captures) are replayed as the frames they sent.
        if matches!(
            w.first().map(String::as_str),
            Some("flow" | "host-connect" | "neighbour")
        ) {
            let now = self.sim.now();
            let k = self.sim.delivered.len();
            self.realized_sys
                .push((now, k, format!("`sim {}`", w.join(" "))));
        }
        let r: Result<(), String> = (|| {
            match w.first().map(String::as_str) {
                Some("flow") => {
                    let g = parse_sa(w.get(1).ok_or("flow: guest address missing")?)?;
                    let rw = w.get(3).ok_or("flow: remote address missing")?;
                    // `auto`: learnt from the first segment the core sends to
                    // the guest's port (connections from the host side).
                    let r = if rw == "auto" {
                        None
                    } else {
                        Some(parse_sa(rw)?)
                    };
                    self.flow = Some(FlowCtx {
                        guest: g,
                        remote: r,
                    });
                }
                Some("drain") => {
                    let n = self.sim.guest_inbox.len();
                    self.sim.guest_inbox.clear();
                    self.sim
                        .note("sim", format!("drain: {n} frames not checked"));
                }
                Some("drain-at-end") => self.drain_at_end = true,
                Some("host-connect") => {
                    // host-connect ADDR:PORT MODEL...: a host peer connects to a
                    // listener of the core.
                    let addr = parse_sa(w.get(1).ok_or("host-connect: address missing")?)?;
                    let words: Vec<&str> = w[2..].iter().map(String::as_str).collect();
                    let model = PeerModel::parse(&words)?;
                    let r = self.sim.kernel.peer_connect(addr, model, Netns::Host);
                    self.sim
                        .app_did(format!("peer ({model}) connect({addr}) = {r:?}"));
                    r.map_err(|e| format!("host-connect: {}", errno_name(e)))?;
                }
                Some("guest-tcp") => {
                    // guest-tcp connect REMOTE send N [from PORT] [mss N]
                    // guest-tcp listen PORT send N
                    let n: u32 = w
                        .iter()
                        .position(|x| x == "send")
                        .map_or(Ok(0), |p| num(w.get(p + 1), "send"))?;
                    let ip = IpAddr::V4(self.guest_ip4());
                    let g = match w.get(1).map(String::as_str) {
                        Some("connect") => {
                            let remote = parse_sa(w.get(2).ok_or("guest-tcp: remote missing")?)?;
                            let port: u16 = w
                                .iter()
                                .position(|x| x == "from")
                                .map_or(Ok(40000 + self.sim.guests.len() as u16), |p| {
                                    num(w.get(p + 1), "from")
                                })?;
                            let local_ip = if remote.is_ipv4() {
                                ip
                            } else {
                                self.sim
                                    .core
                                    .config()
                                    .ip6
                                    .as_ref()
                                    .map_or(ip, |c| c.addr.into())
                            };
                            crate::guest::GuestTcp::connect(
                                SocketAddr::new(local_ip, port),
                                remote,
                                n,
                                self.guest_mac,
                                self.our_mac,
                            )
                        }
                        Some("listen") => {
                            let port: u16 = num(w.get(2), "listen port")?;
                            crate::guest::GuestTcp::listen(
                                SocketAddr::new(ip, port),
                                n,
                                self.guest_mac,
                                self.our_mac,
                            )
                        }
                        _ => return Err("guest-tcp: say connect or listen".into()),
                    };
                    let mut g = g;
                    g.fin_after_peer = w.iter().any(|x| x == "fin-after-peer");
                    if let Some(p) = w.iter().position(|x| x == "mss") {
                        g.mss = num(w.get(p + 1), "mss")?;
                    }
                    self.sim.guests.push(g);
                    let mut out = Vec::new();
                    let now = self.sim.now().as_nanos();
                    if let Some(g) = self.sim.guests.last_mut() {
                        g.on_timer(now, &mut out);
                        if g.state == crate::guest::TcpState::SynSent {
                            g.start(now, &mut out);
                        }
                    }
                    for f in out {
                        self.sim.guest_send(&f);
                    }
                }
                Some("neighbour") => {
                    // neighbour ADDR MAC|none: the host's neighbour table
                    // changed (a LAN host appeared, moved or went away).
                    let a = w.get(1).ok_or("neighbour: address missing")?;
                    let addr: IpAddr = a
                        .parse()
                        .map_err(|_| format!("neighbour: bad address `{a}`"))?;
                    let m = w.get(2).ok_or("neighbour: MAC or `none` missing")?;
                    let mac = match m.as_str() {
                        "none" => None,
                        s => Some(Mac::parse(s).ok_or(format!("neighbour: bad MAC `{s}`"))?),
                    };
                    self.sim.neighbour(addr, mac);
                }
                Some("flush") => {}
                Some("guest-pause") => {
                    // guest-pause SECONDS: the model endpoints stop.
                    let secs: f64 = num(w.get(1), "guest-pause")?;
                    let until = self
                        .sim
                        .now()
                        .saturating_add(Duration::from_nanos((secs * 1e9) as u64));
                    self.sim.guest_paused_until = Some(until);
                    self.sim.note("sim", format!("guest paused for {secs} s"));
                }
                Some("tolerance") => {
                    self.tolerance_ns = (num::<f64>(w.get(1), "tolerance")? * 1e3) as u64
                }
                Some("check") => self.check(w)?,
                Some("pcap") => self.pcap(w)?,
                Some("replay") => {
                    crate::replay::directive(&mut self.sim, &w[1..], self.guest_mac, self.our_mac)?
                }
                Some(d) => {
                    if matches!(
                        d,
                        "config"
                            | "seed"
                            | "faults"
                            | "link"
                            | "host"
                            | "peer"
                            | "default-peer"
                            | "settle"
                            | "heal"
                            | "known-violation"
                            | "sweep-known"
                    ) {
                        return Err(format!("`{d}` belongs before the first event"));
                    }
                    return Err(format!("unknown directive `{d}`"));
                }
                None => return Err("empty directive".into()),
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.fail(no, e);
        }
    }

    /// `check dropped|replies NAME N`: the counter read (`got`) must be N
    /// (unless lenient); noted either way.
    fn check_count(&mut self, w: &[String], got: u64) -> Result<(), String> {
        let (what, name) = (&w[1], &w[2]);
        let want: u64 = num(w.get(3), &format!("check {what}"))?;
        if got != want && !self.opts.lenient {
            return Err(format!("{what} {name}: {got}, expected {want}"));
        }
        self.sim.note("check", format!("{what} {name} = {got}"));
        Ok(())
    }

    fn check(&mut self, w: &[String]) -> Result<(), String> {
        match w.get(1).map(String::as_str) {
            Some("dropped") => {
                let r = named(
                    w,
                    "reason",
                    "drop reason",
                    passt_core::DropReason::ALL,
                    |r| r.name(),
                )?;
                let got = self.sim.core.counters().dropped(r);
                self.check_count(w, got)?;
            }
            Some("replies") => {
                let k = named(w, "kind", "reply kind", passt_core::ReplyKind::ALL, |k| {
                    k.name()
                })?;
                let got = self.sim.core.counters().replies(k);
                self.check_count(w, got)?;
            }
            Some(what @ ("flows" | "sockets")) => {
                let want: usize = num(w.get(2), "check flows/sockets")?;
                let got = if what == "flows" {
                    self.sim.core.flow_count()
                } else {
                    self.sim.core.socket_count()
                };
                if got != want {
                    return Err(format!("{what}: {got}, expected {want}"));
                }
                self.sim.note("check", format!("{what} = {got}"));
            }
            _ => {
                return Err(
                    "check: say `dropped REASON N`, `replies KIND N`, `flows N` or `sockets N`"
                        .into(),
                )
            }
        }
        Ok(())
    }

    fn pcap(&mut self, w: &[String]) -> Result<(), String> {
        let file = self.sc.dir.join(w.get(1).ok_or("pcap: file missing")?);
        let mut guest_mac = None;
        let mut limit = usize::MAX;
        let mut i = 2;
        while i < w.len() {
            match w[i].as_str() {
                "guest-mac" => {
                    guest_mac = Some(parse_mac(w.get(i + 1).ok_or("pcap: MAC missing")?)?)
                }
                "limit" => limit = num(w.get(i + 1), "limit")?,
                k => return Err(format!("pcap: unknown option `{k}`")),
            }
            i += 2;
        }
        let frames = read_pcap(&file)?;
        let mac = guest_mac
            .or_else(|| guess_guest_mac(&frames))
            .ok_or("pcap: cannot tell the guest's MAC; say guest-mac")?;
        let t0 = frames.first().map_or(Duration::ZERO, |f| f.0);
        let base = self.sim.now();
        // The recorded translator's initial sequence numbers, per flow (from
        // its SYN or SYN-ACK to the guest): the guest's acknowledgements are
        // mapped onto the numbers our core chose.
        let mut recorded_isn = std::collections::BTreeMap::new();
        for (_, f) in frames.iter().filter(|f| f.1.get(6..12) != Some(&mac[..])) {
            if let Some(t) = frame::parse_tcp(f) {
                if t.flags & flags::SYN != 0 {
                    recorded_isn.insert((t.src, t.dst), t.seq);
                }
            }
        }
        let mut n = 0;
        let mut mapped = 0;
        for (t, f) in frames
            .iter()
            .filter(|f| f.1.get(6..12) == Some(&mac[..]))
            .take(limit)
        {
            let at = base.saturating_add(t.saturating_sub(t0));
            self.sim.run_until(at);
            let mut f = f.clone();
            if let Some(seg) = frame::parse_tcp(&f) {
                let key = (seg.dst, seg.src);
                if let (Some(rec), Some(ours)) =
                    (recorded_isn.get(&key), self.sim.core_isn(key.0, key.1))
                {
                    if seg.flags & flags::ACK != 0
                        && frame::set_tcp_ack(&mut f, seg.ack.wrapping_sub(*rec).wrapping_add(ours))
                    {
                        mapped += 1;
                    }
                }
            }
            self.sim.guest_send(&f);
            n += 1;
        }
        if mapped > 0 {
            self.sim.note(
                "sim",
                format!("pcap: {mapped} acknowledgement numbers mapped to the core's"),
            );
        }
        self.sim.note(
            "sim",
            format!("pcap: {n} guest frames of {} replayed", frames.len()),
        );
        Ok(())
    }

    pub(super) fn syscall(&mut self, no: usize, text: &str) {
        let r = self.syscall_inner(text);
        let now = self.sim.now();
        // Realized form: the same call, any result.
        let call = text.split(" = ").next().unwrap_or(text).trim().to_string();
        let k = self.sim.delivered.len();
        self.realized_sys.push((now, k, format!("{call} = ...")));
        match r {
            Ok((got, want)) => {
                self.sim.app_did(format!("{call} = {got}"));
                if let Some(want) = want {
                    if want != got && !self.opts.lenient {
                        self.fail(no, format!("`{call}` returned {got}, expected {want}"));
                    }
                }
            }
            Err(e) => self.fail(no, e),
        }
    }

    /// Runs a syscall; returns (what it returned, what the script expects).
    // Long by design: one arm per scripted syscall (socket, bind, listen, accept, connect,
    // read, write, shutdown, close, setsockopt).
    fn syscall_inner(&mut self, text: &str) -> Result<(String, Option<String>), String> {
        let (call, want) = match text.split_once(" = ") {
            Some((c, w)) => (c.trim(), Some(w.trim())),
            None => (text.trim(), None),
        };
        let want = want
            .filter(|w| *w != "...")
            .map(|w| w.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
        let open = call.find('(').ok_or("syscall: `(` missing")?;
        let name = &call[..open];
        let args_s = call[open + 1..].trim_end_matches(')');
        let args: Vec<&str> = split_args(args_s);
        let fd = |i: usize| -> Result<i32, String> {
            args.get(i)
                .ok_or("syscall: argument missing")?
                .trim()
                .parse()
                .map_err(|_| "syscall: bad fd".to_string())
        };
        // The length argument of a read or write.
        let len = |call: &str| -> Result<usize, String> {
            args.get(2)
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("{call}: length missing"))
        };
        let flow = self.flow;
        let k = &mut self.sim.kernel;
        let ret = |r: Result<usize, Errno>| match r {
            Ok(n) => n.to_string(),
            Err(e) => format!("-1 {}", errno_name(e)),
        };
        let got = match name {
            "socket" => {
                let stream = !args_s.contains("SOCK_DGRAM");
                let v6 = args_s.contains("AF_INET6");
                k.app_socket(stream, if v6 { Family::V6 } else { Family::V4 })
                    .to_string()
            }
            "bind" => {
                let a = args
                    .get(1)
                    .map(|s| s.trim())
                    .ok_or("bind: address missing")?;
                let addr = if a == "..." {
                    let f = flow
                        .and_then(|f| f.remote)
                        .ok_or("bind(..., ...) needs `sim flow` with a remote address")?;
                    SocketAddr::new(
                        if f.is_ipv4() {
                            Ipv4Addr::UNSPECIFIED.into()
                        } else {
                            Ipv6Addr::UNSPECIFIED.into()
                        },
                        f.port(),
                    )
                } else {
                    parse_sa(a)?
                };
                ret(k.app_bind(fd(0)?, addr).map(|_| 0))
            }
            "listen" => {
                let b = args
                    .get(1)
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(128);
                ret(k.app_listen(fd(0)?, b).map(|_| 0))
            }
            "accept" => ret(k.app_accept(fd(0)?).map(|f| f as usize)),
            "connect" => {
                let a = args
                    .get(1)
                    .map(|s| s.trim())
                    .ok_or("connect: address missing")?;
                let (addr, netns) = if a == "..." {
                    let f = flow.ok_or("connect(..., ...) needs `sim flow`")?;
                    (f.guest, Netns::Host)
                } else {
                    (parse_sa(a)?, Netns::Host)
                };
                ret(k.app_connect(fd(0)?, addr, netns).map(|_| 0))
            }
            "write" | "send" => {
                let n = len("write")?;
                ret(k.app_write(fd(0)?, n))
            }
            "read" | "recv" => {
                let n = len("read")?;
                ret(k.app_read(fd(0)?, n))
            }
            "shutdown" => ret(k.app_shutdown(fd(0)?).map(|_| 0)),
            "close" => ret(k.app_close(fd(0)?).map(|_| 0)),
            "setsockopt" => {
                let v: u32 = args
                    .get(3)
                    .map(|s| s.trim().trim_start_matches('[').trim_end_matches(']'))
                    .and_then(|s| s.parse().ok())
                    .ok_or("setsockopt: value missing")?;
                let which = args.get(2).map(|s| s.trim()).unwrap_or("");
                let r = match which {
                    "SO_RCVBUF" => k.app_setbuf(fd(0)?, None, Some(v)),
                    "SO_SNDBUF" => k.app_setbuf(fd(0)?, Some(v), None),
                    _ => Ok(()),
                };
                ret(r.map(|_| 0))
            }
            _ => return Err(format!("unsupported syscall `{name}`")),
        };
        Ok((got, want))
    }
}

/// The item of `all` named by word 2 of `check` words `w` (its `field`,
/// an `unknown` one if none has that name).
fn named<T: Copy>(
    w: &[String],
    field: &str,
    unknown: &str,
    all: &[T],
    name: impl Fn(&T) -> &'static str,
) -> Result<T, String> {
    let what = &w[1];
    let n = w
        .get(2)
        .ok_or_else(|| format!("check {what}: {field} missing"))?;
    all.iter()
        .find(|x| name(x) == n.as_str())
        .copied()
        .ok_or_else(|| format!("unknown {unknown} `{n}`"))
}

//! Port forwarding tables and the grammar of `-t`, `-u`, `-T` and `-U`.
//!
//! A specification is one of:
//!
//! ```text
//! SPEC  := "none" | "auto" | "all" | [BIND "/"] LIST
//! BIND  := [ADDR] ["%" IFNAME]      ADDR may be written in [brackets]
//! LIST  := ITEM ("," ITEM)*
//! ITEM  := ["~"] FIRST ["-" LAST] [":" TFIRST ["-" TLAST]]
//! ```
//!
//! `~` excludes ports; a list made only of exclusions means every port that is
//! not ephemeral and not excluded (like `all`). `:` maps a range onto a target
//! range of the same length. Several specifications may be given for one table
//! (the option is repeatable) as long as they do not mix `none`, `auto` or `all`
//! with anything else.
//!
//! Parsing makes no system calls: the ephemeral port range comes in as an
//! argument. The resulting [`FwdTable`] holds a per-port map and delta (the
//! target port is `port + delta`, wrapping) and the list of [`FwdRule`]s with
//! their bind address and interface; [`FwdTable::forwards`] turns an explicit
//! or `all` table into the core's [`Forward`]s, whose listeners the core
//! opens.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};
use passt_core::{Forward, Proto};

/// Number of port numbers (`0..=65535`).
pub const NUM_PORTS: usize = 65536;

/// Longest interface name accepted after `%` (`IFNAMSIZ - 1`).
pub const IFNAME_MAX: usize = 15;

/// The ephemeral range used when the host's cannot be read (RFC 6335).
pub const EPHEMERAL_DEFAULT: (u16, u16) = (49152, 65535);

/// Which option a specification belongs to: decides which keywords and parts
/// are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecKind {
    /// passt `-t`/`-u`: `none`, `all` or a list, with an optional bind part.
    PasstInbound,
    /// pasta `-t`/`-u`: `none`, `auto` or a list, with an optional bind part.
    PastaInbound,
    /// pasta `-T`/`-U`: `none`, `auto` or a list; no bind part (the listeners
    /// are on the namespace's loopback).
    PastaOutbound,
}

/// How a table forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FwdMode {
    /// No specification given yet: the driver applies the mode's default.
    #[default]
    Unset,
    /// Forward nothing (`none`).
    None,
    /// Forward whatever is bound on the other side, rescanned periodically
    /// (`auto`, pasta only).
    Auto,
    /// Every non-ephemeral port (`all`, passt only).
    All,
    /// Explicit ports (a list, possibly exclusions only).
    Spec,
}

impl fmt::Display for FwdMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FwdMode::Unset => "unset",
            FwdMode::None => "none",
            FwdMode::Auto => "auto",
            FwdMode::All => "all",
            FwdMode::Spec => "ports",
        })
    }
}

/// A binding and one contiguous range of forwarded ports, in the order a spec
/// gives them (`ADDR%IFNAME/FIRST-LAST:TFIRST-TLAST`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwdRule {
    /// Address to bind, if any (otherwise the wildcard).
    pub addr: Option<IpAddr>,
    /// Interface to bind to (`SO_BINDTODEVICE`), if any.
    pub ifname: Option<String>,
    /// Index of [`Self::ifname`], filled in by the driver
    /// ([`FwdTable::resolve_interfaces`]): the core cannot look names up.
    pub ifindex: Option<u32>,
    /// First port listened on.
    pub first: u16,
    /// Last port listened on (inclusive).
    pub last: u16,
    /// Target port of `first`; the range keeps its length.
    pub to: u16,
    /// Bind failures of single ports are ignored as long as one port of the
    /// table could be bound (`all` and exclusion-only lists); otherwise any
    /// failure is fatal.
    pub best_effort: bool,
}

impl FwdRule {
    /// Target port for `port`, if `port` is in this rule.
    pub fn target(&self, port: u16) -> Option<u16> {
        if port < self.first || port > self.last {
            return None;
        }
        Some(self.to.wrapping_add(port - self.first))
    }
}

/// Why a specification was refused. The `Display` text names the part that is
/// wrong; the caller adds the option name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FwdError {
    /// Empty specification or empty list item.
    Empty,
    /// `none`, `auto`, `all` combined with another specification.
    ModeConflict {
        /// The mode already set.
        previous: FwdMode,
        /// What this specification asked for.
        new: FwdMode,
    },
    /// `auto` in passt.
    AutoNotAllowed,
    /// `all` in pasta.
    AllNotAllowed,
    /// Address or interface part where none is allowed (`-T`, `-U`).
    BindNotAllowed,
    /// The address part does not parse or is not usable.
    BadAddress(String),
    /// The interface name is empty or too long.
    BadInterface(String),
    /// A port number, range or list item does not parse.
    BadRange(String),
    /// `LAST < FIRST`, or a target range of another length.
    RangeMismatch(String),
    /// A target given for an exclusion.
    ExclusionTarget(String),
    /// Two exclusions cover the same port.
    OverlappingExclusion(u16),
    /// A target port of 0.
    PortZero(String),
}

impl fmt::Display for FwdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FwdError::Empty => write!(f, "empty port specification"),
            FwdError::ModeConflict { previous, new } => write!(
                f,
                "'{new}' conflicts with the previous forwarding mode '{previous}'"
            ),
            FwdError::AutoNotAllowed => write!(f, "'auto' forwarding is only available in pasta"),
            FwdError::AllNotAllowed => {
                write!(f, "'all' forwarding is only available in passt -t and -u")
            }
            FwdError::BindNotAllowed => write!(
                f,
                "an address or interface can't be given for namespace-side forwarding"
            ),
            FwdError::BadAddress(s) => write!(f, "invalid bind address '{s}'"),
            FwdError::BadInterface(s) => write!(f, "invalid interface name '{s}'"),
            FwdError::BadRange(s) => write!(f, "invalid port or range '{s}'"),
            FwdError::RangeMismatch(s) => write!(f, "mismatched port range '{s}'"),
            FwdError::ExclusionTarget(s) => {
                write!(f, "an excluded range can't have a target: '{s}'")
            }
            FwdError::OverlappingExclusion(p) => {
                write!(f, "overlapping exclusions (port {p} excluded twice)")
            }
            FwdError::PortZero(s) => write!(f, "port 0 can't be a forwarding target: '{s}'"),
        }
    }
}

impl std::error::Error for FwdError {}

/// A forwarding table: what one of `-t`, `-u`, `-T`, `-U` asked for.
#[derive(Clone, PartialEq, Eq)]
pub struct FwdTable {
    mode: FwdMode,
    /// Bitmap of forwarded ports: empty until a port is added, then
    /// `NUM_PORTS / 64` words (a default table costs nothing).
    map: Vec<u64>,
    /// Per-port delta to the target port (wrapping): empty until a port is
    /// remapped, then `NUM_PORTS` entries.
    delta: Vec<u16>,
    rules: Vec<FwdRule>,
}

impl Default for FwdTable {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FwdTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FwdTable")
            .field("mode", &self.mode)
            .field("ports", &self.count())
            .field("rules", &self.rules)
            .finish()
    }
}

/// Parsed `FIRST[-LAST]` range.
#[derive(Clone, Copy)]
struct Range {
    first: u16,
    last: u16,
}

impl Range {
    fn len(self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }
}

fn parse_port(s: &str, item: &str) -> Result<u16, FwdError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FwdError::BadRange(item.into()));
    }
    s.parse::<u16>()
        .map_err(|_| FwdError::BadRange(item.into()))
}

fn parse_range(s: &str, item: &str) -> Result<Range, FwdError> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let first = parse_port(a, item)?;
    let last = match b {
        Some(b) => parse_port(b, item)?,
        None => first,
    };
    if last < first {
        return Err(FwdError::RangeMismatch(item.into()));
    }
    Ok(Range { first, last })
}

/// The items of a port list (after any address): the excluded ports (`~`),
/// the ranges with their targets, and whether the list held exclusions
/// only.
#[allow(clippy::type_complexity)]
fn parse_list(list: &str) -> Result<(Vec<bool>, Vec<(Range, Option<Range>)>, bool), FwdError> {
    let mut excluded = vec![false; NUM_PORTS];
    let mut items = Vec::new();
    let mut exclusion_only = true;
    for item in list.split(',') {
        if item.is_empty() {
            return Err(FwdError::Empty);
        }
        if let Some(ex) = item.strip_prefix('~') {
            if ex.contains(':') {
                return Err(FwdError::ExclusionTarget(item.into()));
            }
            let r = parse_range(ex, item)?;
            for p in r.first..=r.last {
                let e = excluded
                    .get_mut(usize::from(p))
                    .ok_or_else(|| FwdError::BadRange(item.into()))?;
                if *e {
                    return Err(FwdError::OverlappingExclusion(p));
                }
                *e = true;
            }
        } else {
            exclusion_only = false;
            let (src, dst) = parse_item(item)?;
            if let Some(d) = dst {
                if d.first == 0 {
                    return Err(FwdError::PortZero(item.into()));
                }
            }
            items.push((src, dst));
        }
    }
    Ok((excluded, items, exclusion_only))
}

/// Splits `ITEM` into its source range and optional target range.
fn parse_item(item: &str) -> Result<(Range, Option<Range>), FwdError> {
    let (src, dst) = match item.split_once(':') {
        Some((s, d)) => (s, Some(d)),
        None => (item, None),
    };
    let src = parse_range(src, item)?;
    let dst = match dst {
        Some(d) => {
            let d = parse_range(d, item)?;
            if d.len() != src.len() {
                return Err(FwdError::RangeMismatch(item.into()));
            }
            Some(d)
        }
        None => None,
    };
    Ok((src, dst))
}

/// Parses the `BIND` part before `/`.
fn parse_bind(bind: &str) -> Result<(Option<IpAddr>, Option<String>), FwdError> {
    let (addr, ifname) = match bind.split_once('%') {
        Some((a, i)) => (a, Some(i)),
        None => (bind, None),
    };
    let ifname = match ifname {
        Some(i) if i.is_empty() || i.len() > IFNAME_MAX || i.contains('/') => {
            return Err(FwdError::BadInterface(i.into()))
        }
        Some(i) => Some(i.to_string()),
        None => None,
    };
    let addr_s = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let addr = if addr_s.is_empty() {
        if ifname.is_none() {
            return Err(FwdError::BadAddress(bind.into()));
        }
        None
    } else {
        let a: IpAddr = addr_s
            .parse()
            .map_err(|_| FwdError::BadAddress(addr.into()))?;
        if a.is_multicast() || is_v4_broadcast(a) {
            return Err(FwdError::BadAddress(addr.into()));
        }
        Some(a)
    };
    Ok((addr, ifname))
}

fn is_v4_broadcast(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v) if v == Ipv4Addr::BROADCAST)
}

impl FwdTable {
    /// Fills in the interface index of every rule bound to an interface
    /// (`%IFNAME`), with `lookup` from name to index. An unknown interface is
    /// an error naming it.
    pub fn resolve_interfaces(
        &mut self,
        lookup: &mut dyn FnMut(&str) -> Option<u32>,
    ) -> Result<(), String> {
        for r in &mut self.rules {
            if let Some(name) = &r.ifname {
                r.ifindex = Some(lookup(name).ok_or_else(|| format!("no interface {name}"))?);
            }
        }
        Ok(())
    }

    /// An empty table in mode [`FwdMode::Unset`].
    pub fn new() -> Self {
        FwdTable {
            mode: FwdMode::Unset,
            map: Vec::new(),
            delta: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// A table parsed from a list of specifications, in order.
    pub fn from_specs<S: AsRef<str>>(
        specs: &[S],
        kind: SpecKind,
        ephemeral: (u16, u16),
    ) -> Result<(Self, Vec<String>), FwdError> {
        let mut t = FwdTable::new();
        let mut warnings = Vec::new();
        for s in specs {
            warnings.extend(t.add_spec(s.as_ref(), kind, ephemeral)?);
        }
        Ok((t, warnings))
    }

    /// The mode.
    pub fn mode(&self) -> FwdMode {
        self.mode
    }

    /// Sets the mode of a table that has none yet (the default of an option
    /// that was not given). Does nothing otherwise.
    pub fn set_default(&mut self, mode: FwdMode) {
        if self.mode == FwdMode::Unset {
            self.mode = mode;
        }
    }

    /// The ranges to listen on, in the order given.
    pub fn rules(&self) -> &[FwdRule] {
        &self.rules
    }

    /// Whether `port` is forwarded by an explicit specification or `all`.
    pub fn is_forwarded(&self, port: u16) -> bool {
        let p = usize::from(port);
        self.map
            .get(p / 64)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    /// The delta applied to `port` (0 for ports not remapped).
    pub fn delta(&self, port: u16) -> u16 {
        self.delta.get(usize::from(port)).copied().unwrap_or(0)
    }

    /// Target port for a connection that arrived on `port`. In `auto` mode
    /// every port maps to itself.
    pub fn target(&self, port: u16) -> Option<u16> {
        match self.mode {
            FwdMode::Auto => Some(port),
            _ if self.is_forwarded(port) => Some(port.wrapping_add(self.delta(port))),
            _ => None,
        }
    }

    /// The forwards of an explicit or `all` table for protocol `proto`, in
    /// the order of its rules: one per run of ports of a rule with the same
    /// delta, so that a later remapping of part of a range holds. Interface
    /// names must be resolved first ([`Self::resolve_interfaces`]). Other
    /// modes forward nothing by themselves (`auto` is the port scanner's).
    pub fn forwards(&self, proto: Proto) -> Vec<Forward> {
        let mut out = Vec::new();
        if !matches!(self.mode, FwdMode::Spec | FwdMode::All) {
            return out;
        }
        for r in &self.rules {
            let mut run: Option<Forward> = None;
            for port in r.first..=r.last {
                let target = self.target(port).filter(|_| self.is_forwarded(port));
                let extends =
                    |f: &Forward| target == f.target_of(f.last).map(|t| t.wrapping_add(1));
                match (run.as_mut(), target) {
                    (Some(f), Some(_)) if f.last.checked_add(1) == Some(port) && extends(f) => {
                        f.last = port;
                    }
                    (_, t) => {
                        out.extend(run.take());
                        run = t.map(|target_port| Forward {
                            addr: r.addr,
                            ifindex: r.ifindex,
                            ..Forward::new(proto, port, target_port)
                        });
                    }
                }
            }
            out.extend(run);
        }
        out
    }

    /// How many ports are in the map.
    pub fn count(&self) -> usize {
        self.map.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn set(&mut self, port: u16, delta: u16) -> bool {
        let p = usize::from(port);
        let was = self.is_forwarded(port);
        if self.map.is_empty() {
            self.map = vec![0; NUM_PORTS / 64];
        }
        if delta != 0 && self.delta.is_empty() {
            self.delta = vec![0; NUM_PORTS];
        }
        if let Some(w) = self.map.get_mut(p / 64) {
            *w |= 1 << (p % 64);
        }
        if let Some(d) = self.delta.get_mut(p) {
            *d = delta;
        }
        was
    }

    fn set_mode(&mut self, new: FwdMode) -> Result<(), FwdError> {
        let ok = match new {
            FwdMode::Spec => matches!(self.mode, FwdMode::Unset | FwdMode::Spec),
            _ => self.mode == FwdMode::Unset,
        };
        if !ok {
            return Err(FwdError::ModeConflict {
                previous: self.mode,
                new,
            });
        }
        self.mode = new;
        Ok(())
    }

    /// Adds every non-ephemeral port from 1 up that is not in `excluded` as
    /// best-effort rules.
    fn add_all_but(
        &mut self,
        excluded: &[bool],
        ephemeral: (u16, u16),
        addr: Option<IpAddr>,
        ifname: &Option<String>,
    ) {
        let skip = |p: u16| {
            (p >= ephemeral.0 && p <= ephemeral.1)
                || excluded.get(usize::from(p)).copied().unwrap_or(false)
        };
        let mut start: Option<u16> = None;
        for p in 1..=u16::MAX {
            let fwd = !skip(p);
            if fwd {
                self.set(p, 0);
                if start.is_none() {
                    start = Some(p);
                }
            }
            let end_here = !fwd || p == u16::MAX;
            if end_here {
                if let Some(s) = start.take() {
                    let last = if fwd { p } else { p - 1 };
                    self.rules.push(FwdRule {
                        first: s,
                        last,
                        to: s,
                        addr,
                        ifname: ifname.clone(),
                        ifindex: None,
                        best_effort: true,
                    });
                }
            }
        }
    }

    /// Parses one specification into the table. Returns warnings (ports whose
    /// mapping was changed by this specification).
    pub fn add_spec(
        &mut self,
        spec: &str,
        kind: SpecKind,
        ephemeral: (u16, u16),
    ) -> Result<Vec<String>, FwdError> {
        let mut warnings = Vec::new();
        match spec {
            "" => return Err(FwdError::Empty),
            "none" => {
                self.set_mode(FwdMode::None)?;
                return Ok(warnings);
            }
            "auto" => {
                if kind == SpecKind::PasstInbound {
                    return Err(FwdError::AutoNotAllowed);
                }
                self.set_mode(FwdMode::Auto)?;
                return Ok(warnings);
            }
            "all" => {
                if kind != SpecKind::PasstInbound {
                    return Err(FwdError::AllNotAllowed);
                }
                self.set_mode(FwdMode::All)?;
                self.add_all_but(&[], ephemeral, None, &None);
                return Ok(warnings);
            }
            _ => {}
        }

        let (bind, list) = match spec.split_once('/') {
            Some((b, l)) => (Some(b), l),
            None => (None, spec),
        };
        let (addr, ifname) = match bind {
            Some(_) if kind == SpecKind::PastaOutbound => return Err(FwdError::BindNotAllowed),
            Some(b) => parse_bind(b)?,
            None => (None, None),
        };
        if list.is_empty() {
            return Err(FwdError::Empty);
        }

        // Check the whole list before changing anything.
        let (excluded, items, exclusion_only) = parse_list(list)?;

        self.set_mode(FwdMode::Spec)?;
        if exclusion_only {
            self.add_all_but(&excluded, ephemeral, addr, &ifname);
            return Ok(warnings);
        }

        for (src, dst) in items {
            let to0 = dst.map_or(src.first, |d| d.first);
            let delta = to0.wrapping_sub(src.first);
            let mut run: Option<u16> = None;
            for p in src.first..=src.last {
                let skip = p == 0 || excluded.get(usize::from(p)).copied().unwrap_or(false);
                if !skip {
                    if self.set(p, delta) {
                        warnings.push(format!("mapping of port {p} changed"));
                    }
                    if run.is_none() {
                        run = Some(p);
                    }
                }
                if skip || p == src.last {
                    if let Some(s) = run.take() {
                        let last = if skip { p - 1 } else { p };
                        self.rules.push(FwdRule {
                            first: s,
                            last,
                            to: s.wrapping_add(delta),
                            addr,
                            ifname: ifname.clone(),
                            ifindex: None,
                            best_effort: false,
                        });
                    }
                }
            }
        }
        Ok(warnings)
    }
}

/// The four forwarding tables of a run.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Forwarding {
    /// Inbound TCP (`-t`): host listeners forwarding to the guest.
    pub tcp_in: FwdTable,
    /// Inbound UDP (`-u`).
    pub udp_in: FwdTable,
    /// Outbound TCP (`-T`, pasta): namespace loopback listeners forwarding to
    /// the host's loopback.
    pub tcp_out: FwdTable,
    /// Outbound UDP (`-U`, pasta).
    pub udp_out: FwdTable,
}

/// Linux's loopback device index in every namespace (`LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: u32 = 1;

/// A `-T` forward: listeners in the namespace on every address of its
/// loopback device (`SO_BINDTODEVICE`, as upstream now does: all of 127/8
/// and `::1`, one dual-stack socket), spliced to the host's loopback.
pub fn outbound_forward(f: Forward) -> Forward {
    Forward {
        netns: passt_core::Netns::Guest,
        addr: None,
        ifindex: Some(LOOPBACK_IFINDEX),
        target: None,
        ..f
    }
}

#[cfg(test)]
mod tests;

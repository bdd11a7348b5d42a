//! DHCPv4 and BOOTP messages (RFC 2131, RFC 2132, RFC 951): parsing requests,
//! writing replies.
//!
//! The reply header: `op` 2, `htype`/`hlen`/`xid`/`flags`/`ciaddr`/`giaddr`/
//! `chaddr` copied from the request, `hops` 0, `secs` 0, `yiaddr` the assigned
//! address, `siaddr` 0, `sname` and `file` empty.
//!
//! Options are written with 53 first (unless the client's parameter request
//! list names 53, then it takes its place there; upstream passt also leaves it
//! in code order when there is no list at all), then in the order of the
//! parameter request list, then the rest in ascending code order. The options
//! area is closed with 255 and a pad byte, as upstream passt does, and
//! zero-padded to at least 60 bytes, so that a short reply has the 300 bytes of
//! a classic BOOTP message. The search list (119, RFC 3397) uses RFC 1035
//! §4.1.4 compression and is split over several 119 options when longer than
//! 255 bytes (RFC 3396).
//!
//! A reply fits in what the client can take: 576 bytes with the IP and UDP
//! headers (RFC 2131 §2), or the size its option 57 names if larger (RFC 2132
//! §9.10). An option that does not fit is left out, as upstream passt does
//! (it knows no option 57); the search list loses its last names first.
//! busybox udhcpc, for one, drops a longer reply as truncated.

use super::dns::encode_name as encode_plain_name;
use super::{put, put16, put32};
use crate::config::{Config, Ip4Config, MAX_DNS, MAX_SEARCH};
use crate::counters::DropReason;
use arrayvec::ArrayVec;
use core::net::Ipv4Addr;

/// Length of the fixed BOOTP header, up to and including `file`.
pub(crate) const HDR_LEN: usize = 236;
/// The DHCP magic cookie (RFC 2131 §3).
pub(crate) const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Start of the options.
pub(crate) const OPTS_OFF: usize = HDR_LEN + COOKIE.len();
/// Least length of the options area (after the cookie) of a reply.
pub(crate) const OPT_MIN: usize = 60;

pub(crate) const BOOTREQUEST: u8 = 1;
pub(crate) const BOOTREPLY: u8 = 2;
/// Broadcast bit of the `flags` field.
pub(crate) const FLAG_BROADCAST: u16 = 0x8000;

pub(crate) const SERVER_PORT: u16 = 67;
pub(crate) const CLIENT_PORT: u16 = 68;

// Message types (option 53).
pub(crate) const DISCOVER: u8 = 1;
pub(crate) const OFFER: u8 = 2;
pub(crate) const REQUEST: u8 = 3;
pub(crate) const ACK: u8 = 5;

// Option codes.
pub(crate) const OPT_PAD: u8 = 0;
pub(crate) const OPT_MASK: u8 = 1;
pub(crate) const OPT_ROUTER: u8 = 3;
pub(crate) const OPT_DNS: u8 = 6;
pub(crate) const OPT_HOSTNAME: u8 = 12;
pub(crate) const OPT_MTU: u8 = 26;
pub(crate) const OPT_LEASE: u8 = 51;
pub(crate) const OPT_MSG_TYPE: u8 = 53;
pub(crate) const OPT_SERVER_ID: u8 = 54;
pub(crate) const OPT_PRL: u8 = 55;
pub(crate) const OPT_MAX_SIZE: u8 = 57;
pub(crate) const OPT_RAPID_COMMIT: u8 = 80;
pub(crate) const OPT_FQDN: u8 = 81;
pub(crate) const OPT_SEARCH: u8 = 119;
pub(crate) const OPT_ROUTES: u8 = 121;
pub(crate) const OPT_END: u8 = 255;

/// Every option we may send, in ascending code order.
pub(crate) const OUR_OPTIONS: [u8; 12] = [
    OPT_MASK,
    OPT_ROUTER,
    OPT_DNS,
    OPT_HOSTNAME,
    OPT_MTU,
    OPT_LEASE,
    OPT_MSG_TYPE,
    OPT_SERVER_ID,
    OPT_RAPID_COMMIT,
    OPT_FQDN,
    OPT_SEARCH,
    OPT_ROUTES,
];

/// Flags of our option 81 (RFC 4702 §2.1): E, the name in wire format; the
/// two RCODE bytes that follow are 255, as the RFC asks of servers.
pub(crate) const FQDN_FLAGS: [u8; 3] = [0x04, 0xff, 0xff];
/// Size of a message every client takes, IP and UDP headers included
/// (RFC 2131 §2).
pub(crate) const MSG_MIN_MAX: usize = 576;
/// IPv4 and UDP headers, counted in [`MSG_MIN_MAX`] and option 57.
pub(crate) const IP_UDP_HLEN: usize = 28;

/// Longest encoded domain name (RFC 1035 §3.1).
pub(crate) const NAME_MAX: usize = 255;
/// Most labels in one name: one-byte labels, two bytes each, plus the root.
pub(crate) const LABELS_MAX: usize = (NAME_MAX - 1) / 2;
/// Largest search-list encoding: every name of maximal length, nothing shared.
pub(crate) const SEARCH_MAX: usize = MAX_SEARCH * NAME_MAX;
/// Most 119 options a search list is split into.
pub(crate) const SEARCH_OPTS_MAX: usize = SEARCH_MAX.div_ceil(255);
/// Lease time: infinite.
pub(crate) const LEASE_INFINITE: u32 = u32::MAX;

/// Largest DHCP payload we build: every option at its largest.
pub(crate) const REPLY_MAX: usize = OPTS_OFF
    + 3 // 53
    + 6 // 1
    + 6 // 3
    + (2 + 4 * MAX_DNS) // 6
    + (2 + 255) // 12
    + 4 // 26
    + 6 // 51
    + 6 // 54
    + 2 // 80
    + (2 + 255) // 81
    + (SEARCH_MAX + 2 * SEARCH_OPTS_MAX) // 119
    + (2 + 9 + 5) // 121
    + 2; // 255, 0

/// What kind of reply a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// DHCPOFFER.
    Offer,
    /// DHCPACK; `rapid` if it answers a DISCOVER with Rapid Commit.
    Ack { rapid: bool },
    /// A BOOTP reply (no option 53 in the request).
    Bootp,
}

/// The parts of a request the reply depends on.
pub(crate) struct Request<'a> {
    /// The fixed header (`HDR_LEN` bytes).
    pub(crate) hdr: &'a [u8],
    /// Option 53, if present.
    pub(crate) msg_type: Option<u8>,
    /// Parameter request list (option 55; several instances concatenated,
    /// RFC 3396), without duplicates.
    pub(crate) prl: ArrayVec<u8, 256>,
    /// Option 80 present.
    pub(crate) rapid_commit: bool,
    /// Option 57: the longest message the client takes, IP and UDP headers
    /// included.
    pub(crate) max_size: Option<u16>,
}

/// Why a request gets no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Malformed,
    Ignored,
}

impl From<Refused> for DropReason {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Malformed => DropReason::ServiceMalformed,
            Refused::Ignored => DropReason::ServiceIgnored,
        }
    }
}

/// Parses a BOOTP/DHCP request: header, cookie, options as TLVs (pad and end
/// handled, every length checked). A missing end option is tolerated: the
/// options end with the datagram.
pub(crate) fn parse_request(msg: &[u8]) -> Result<Request<'_>, Refused> {
    let hdr = msg.get(..HDR_LEN).ok_or(Refused::Malformed)?;
    if msg.get(HDR_LEN..OPTS_OFF) != Some(&COOKIE[..]) {
        return Err(Refused::Malformed);
    }
    if hdr.first() != Some(&BOOTREQUEST) {
        return Err(Refused::Ignored);
    }
    let mut req = Request {
        hdr,
        msg_type: None,
        prl: ArrayVec::new(),
        rapid_commit: false,
        max_size: None,
    };
    let mut seen = [false; 256];
    let mut i = OPTS_OFF;
    while let Some(&code) = msg.get(i) {
        match code {
            OPT_PAD => {
                i += 1;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let len = usize::from(*msg.get(i + 1).ok_or(Refused::Malformed)?);
        let data = msg.get(i + 2..i + 2 + len).ok_or(Refused::Malformed)?;
        match code {
            OPT_MSG_TYPE => match data {
                [t] => {
                    req.msg_type.get_or_insert(*t);
                }
                _ => return Err(Refused::Malformed),
            },
            OPT_PRL => {
                for &c in data {
                    if !seen[usize::from(c)] {
                        seen[usize::from(c)] = true;
                        // At most 256 distinct codes: cannot overflow.
                        let _ = req.prl.try_push(c);
                    }
                }
            }
            OPT_RAPID_COMMIT => req.rapid_commit = true,
            // Any other length is not an option 57 we understand: the
            // client then gets what every client takes.
            OPT_MAX_SIZE => {
                if let [h, l] = data {
                    req.max_size.get_or_insert(u16::from_be_bytes([*h, *l]));
                }
            }
            _ => {}
        }
        i += 2 + len;
    }
    Ok(req)
}

/// The reply a request gets, if any.
pub(crate) fn reply_kind(req: &Request<'_>) -> Result<Reply, Refused> {
    match req.msg_type {
        None => Ok(Reply::Bootp),
        Some(DISCOVER) if req.rapid_commit => Ok(Reply::Ack { rapid: true }),
        Some(DISCOVER) => Ok(Reply::Offer),
        Some(REQUEST) => Ok(Reply::Ack { rapid: false }),
        Some(_) => Err(Refused::Ignored),
    }
}

/// Writes the reply to `req` into `b`; returns its length.
pub(crate) fn build_reply(
    b: &mut [u8],
    cfg: &Config,
    req: &Request<'_>,
    kind: Reply,
) -> Option<usize> {
    let ip4 = cfg.ip4.as_ref()?;
    let gateway = ip4.gateway?;
    let our = ip4.our_addr.unwrap_or(gateway);

    // Header.
    let hdr = b.get_mut(..OPTS_OFF)?;
    hdr.fill(0);
    hdr[0] = BOOTREPLY;
    put(hdr, 1, req.hdr.get(1..3)?)?; // htype, hlen
    put(hdr, 4, req.hdr.get(4..8)?)?; // xid
    put(hdr, 10, req.hdr.get(10..16)?)?; // flags, ciaddr
    put(hdr, 16, &ip4.addr.octets())?; // yiaddr
    put(hdr, 24, req.hdr.get(24..44)?)?; // giaddr, chaddr
    put(hdr, HDR_LEN, &COOKIE)?;

    // Options, in what the client takes, less the end option and its pad.
    let max_msg = usize::from(req.max_size.unwrap_or(0)).max(MSG_MIN_MAX) - IP_UDP_HLEN;
    let limit = max_msg.min(b.len()).min(REPLY_MAX).saturating_sub(2);
    let ctx = OptCtx {
        cfg,
        ip4,
        gateway,
        our,
        kind,
    };
    let mut w = Writer {
        b,
        pos: OPTS_OFF,
        limit,
        sent: [false; 256],
    };
    if kind != Reply::Bootp && !req.prl.contains(&OPT_MSG_TYPE) {
        w.option(&ctx, OPT_MSG_TYPE)?;
    }
    for &code in &req.prl {
        w.option(&ctx, code)?;
    }
    for code in OUR_OPTIONS {
        w.option(&ctx, code)?;
    }
    w.byte(OPT_END)?;
    // Upstream passt always follows the end option with one pad byte.
    w.byte(OPT_PAD)?;
    let end = OPTS_OFF + (w.pos - OPTS_OFF).max(OPT_MIN);
    w.b.get_mut(w.pos..end)?.fill(0);
    Some(end)
}

/// What the option writer needs to know.
pub(crate) struct OptCtx<'a> {
    cfg: &'a Config,
    ip4: &'a Ip4Config,
    gateway: Ipv4Addr,
    our: Ipv4Addr,
    kind: Reply,
}

/// Appends options to a reply, each at most once.
pub(crate) struct Writer<'a> {
    b: &'a mut [u8],
    pos: usize,
    /// Where the options must end (the end option and its pad follow).
    limit: usize,
    sent: [bool; 256],
}

impl Writer<'_> {
    fn byte(&mut self, v: u8) -> Option<()> {
        *self.b.get_mut(self.pos)? = v;
        self.pos += 1;
        Some(())
    }

    /// Room left for options.
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.pos)
    }

    fn tlv(&mut self, code: u8, data: &[u8]) -> Option<()> {
        self.byte(code)?;
        self.byte(u8::try_from(data.len()).ok()?)?;
        put(self.b, self.pos, data)?;
        self.pos += data.len();
        Some(())
    }

    /// Writes option `code` if it belongs in this reply and was not written yet.
    fn option(&mut self, c: &OptCtx<'_>, code: u8) -> Option<()> {
        if self.sent[usize::from(code)] {
            return Some(());
        }
        let dhcp = c.kind != Reply::Bootp;
        let mut buf = [0u8; 255];
        let data: &[u8] = match code {
            OPT_MSG_TYPE if dhcp => {
                buf[0] = if c.kind == Reply::Offer { OFFER } else { ACK };
                &buf[..1]
            }
            OPT_MASK => {
                put(&mut buf, 0, &c.ip4.netmask().octets())?;
                &buf[..4]
            }
            OPT_ROUTER => {
                put(&mut buf, 0, &c.gateway.octets())?;
                &buf[..4]
            }
            OPT_DNS if c.cfg.features.advertise_dns && !c.ip4.dns.is_empty() => {
                for (i, a) in c.ip4.dns.iter().enumerate() {
                    put(&mut buf, i * 4, &a.octets())?;
                }
                &buf[..c.ip4.dns.len() * 4]
            }
            OPT_HOSTNAME => match c.cfg.hostname.as_deref().map(str::as_bytes) {
                Some(h) if (1..=255).contains(&h.len()) => h,
                _ => return Some(()),
            },
            // RFC 4702 is DHCP's: a BOOTP client gets no option 81.
            OPT_FQDN if dhcp => {
                let Some(fqdn) = c.cfg.fqdn.as_deref() else {
                    return Some(());
                };
                put(&mut buf, 0, &FQDN_FLAGS)?;
                let at = FQDN_FLAGS.len();
                match encode_plain_name(&mut buf[at..], fqdn) {
                    Some(n) => &buf[..at + n],
                    None => {
                        log::debug!("DHCP: FQDN {fqdn} does not fit option 81");
                        return Some(());
                    }
                }
            }
            OPT_MTU if c.cfg.mtu.is_some() => {
                put16(&mut buf, 0, c.cfg.mtu?)?;
                &buf[..2]
            }
            OPT_LEASE if dhcp => {
                put32(&mut buf, 0, LEASE_INFINITE)?;
                &buf[..4]
            }
            OPT_SERVER_ID if dhcp => {
                put(&mut buf, 0, &c.our.octets())?;
                &buf[..4]
            }
            OPT_RAPID_COMMIT if c.kind == (Reply::Ack { rapid: true }) => &[],
            OPT_SEARCH if c.cfg.features.advertise_search => {
                let search = SearchList::encode(c.cfg, search_room(self.room()));
                if search.len == 0 {
                    return Some(());
                }
                self.sent[usize::from(code)] = true;
                // RFC 3396: a long option is split into consecutive instances.
                for chunk in search.bytes().chunks(255) {
                    self.tlv(OPT_SEARCH, chunk)?;
                }
                return Some(());
            }
            OPT_ROUTES if !c.ip4.on_link(c.gateway) => {
                // RFC 3442: the gateway as an on-link host route, then the
                // default route through it.
                let g = c.gateway.octets();
                let mut r = [0u8; 14];
                r[0] = 32;
                put(&mut r, 1, &g)?;
                // r[5..9]: router 0.0.0.0, on-link; r[9]: prefix length 0.
                put(&mut r, 10, &g)?;
                if 2 + r.len() > self.room() {
                    log::debug!("DHCP: no room for option {code}");
                    return Some(());
                }
                self.sent[usize::from(code)] = true;
                return self.tlv(OPT_ROUTES, &r);
            }
            _ => return Some(()),
        };
        if 2 + data.len() > self.room() {
            log::debug!("DHCP: no room for option {code}");
            return Some(());
        }
        self.sent[usize::from(code)] = true;
        self.tlv(code, data)
    }
}

/// The most search-list bytes that fit in `room` bytes of options, split
/// into instances of at most 255 bytes, each with its two-byte header.
fn search_room(room: usize) -> usize {
    (1..=SEARCH_OPTS_MAX)
        .map(|k| (255 * k).min(room.saturating_sub(2 * k)))
        .max()
        .unwrap_or(0)
        .min(SEARCH_MAX)
}

/// The search list encoded for option 119: RFC 1035 names with §4.1.4
/// compression, offsets counted from the start of the (concatenated) option
/// data as RFC 3397 requires.
pub(crate) struct SearchList {
    pub(crate) buf: [u8; SEARCH_MAX],
    pub(crate) len: usize,
}

impl SearchList {
    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// The configured list in at most `room` bytes: names that do not fit
    /// are left out.
    fn encode(cfg: &Config, room: usize) -> SearchList {
        let mut s = SearchList {
            buf: [0; SEARCH_MAX],
            len: 0,
        };
        if cfg.features.advertise_search {
            s.len = encode_names(
                cfg.search.iter().take(MAX_SEARCH).map(String::as_bytes),
                &mut s.buf[..room.min(SEARCH_MAX)],
            );
        }
        s
    }
}

/// Whether `name` (without trailing dot) can be encoded: non-empty labels of
/// at most 63 bytes, at most [`NAME_MAX`] bytes encoded.
pub(crate) fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() + 2 <= NAME_MAX
        && name
            .split(|&c| c == b'.')
            .all(|l| !l.is_empty() && l.len() <= 63)
}

/// A label already written: its offset, and the suffix of input name `name`
/// it starts, from byte `start` on.
#[derive(Clone, Copy)]
pub(crate) struct Written {
    pub(crate) off: u16,
    pub(crate) name: u8,
    pub(crate) start: u8,
}

/// Encodes at most [`MAX_SEARCH`] `names` into `out` and returns the length.
/// A trailing dot is ignored; names that cannot be encoded, or do not fit,
/// are skipped. Every name ends either with the root label or with a pointer
/// to the longest suffix already written.
pub(crate) fn encode_names<'a>(names: impl Iterator<Item = &'a [u8]>, out: &mut [u8]) -> usize {
    let mut valid: ArrayVec<&[u8], MAX_SEARCH> = ArrayVec::new();
    let mut written: ArrayVec<Written, { MAX_SEARCH * LABELS_MAX }> = ArrayVec::new();
    let mut n = 0;
    for name in names.take(MAX_SEARCH) {
        let name = name.strip_suffix(b".").unwrap_or(name);
        if !valid_name(name) || valid.try_push(name).is_err() {
            continue;
        }
        let idx = valid.len() - 1;
        match encode_name(&valid, idx, &mut written, out, n) {
            Some(end) => n = end,
            None => {
                // No room: forget the name and anything recorded for it.
                valid.pop();
                written.retain(|w| usize::from(w.name) != idx);
            }
        }
    }
    n
}

/// Writes name `idx` of `names` at `out[n..]`, compressed against the labels
/// in `written`, and records its new labels there. Returns the end offset.
pub(crate) fn encode_name(
    names: &[&[u8]],
    idx: usize,
    written: &mut ArrayVec<Written, { MAX_SEARCH * LABELS_MAX }>,
    out: &mut [u8],
    mut n: usize,
) -> Option<usize> {
    let name = *names.get(idx)?;
    let mut start = 0;
    loop {
        let rest = name.get(start..)?;
        let known = written.iter().find(|w| {
            let suffix = names
                .get(usize::from(w.name))
                .and_then(|s| s.get(usize::from(w.start)..));
            suffix == Some(rest)
        });
        if let Some(w) = known {
            put16(out, n, 0xc000 | w.off)?;
            return Some(n + 2);
        }
        let label_len = rest.iter().position(|&c| c == b'.').unwrap_or(rest.len());
        let label = rest.get(..label_len)?;
        if let (Ok(off), Ok(name), Ok(start)) =
            (u16::try_from(n), u8::try_from(idx), u8::try_from(start))
        {
            // Pointers have 14 bits of offset.
            if off < 0x4000 {
                let _ = written.try_push(Written { off, name, start });
            }
        }
        *out.get_mut(n)? = u8::try_from(label_len).ok()?;
        put(out, n + 1, label)?;
        n += 1 + label_len;
        start += label_len + 1;
        if start > name.len() {
            *out.get_mut(n)? = 0;
            return Some(n + 1);
        }
    }
}

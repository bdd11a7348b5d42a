//! DHCPv6 server: the stateless subset of RFC 8415 that upstream passt serves.
//!
//! Every client gets the same address, [`Ip6Config::addr`](crate::Ip6Config),
//! with infinite lifetimes; nothing is remembered between messages. Only
//! messages to port 547 with a multicast destination reach this module.
//!
//! | received | condition | answer |
//! |---|---|---|
//! | SOLICIT | no Server ID | ADVERTISE (no Rapid Commit) |
//! | REQUEST, RENEW | our Server ID | REPLY, or REPLY with NotOnLink |
//! | CONFIRM | no Server ID | REPLY, or REPLY with NotOnLink |
//! | REBIND | our Server ID | REPLY |
//! | INFORMATION-REQUEST | no IA; Server ID absent or ours | REPLY without IA |
//! | anything else | | ignored |
//!
//! A Client ID (DUID of 1 to 128 bytes) is required in every message. Replies
//! carry, in this order: Server ID (DUID-LLT of our MAC), IA_NA (IAID echoed,
//! T1 = T2 = infinity) holding one IA Address, the Client ID echoed, DNS
//! servers (23) and the Domain Search List (24). NotOnLink replies carry the
//! offending IA with a Status Code instead of the address, and no DNS options.
//! IA_TA is never served.
//!
//! Parsing is strict: every option, and every option nested in an IA and in an
//! IA Address, must lie inside its parent, or the message is dropped as
//! malformed. Replies are written straight into the control-frame queue.

use crate::config::{Config, MAX_SEARCH};
use crate::counters::{DropReason, ReplyKind};
use crate::engine::{Core, CONTROL_FRAME_MAX};
use crate::tap::{EthHdr, IpHdr};
use crate::time::Instant;
use crate::wire::headers::{finish_udp_frame, l4_offset, ETH_HLEN, UDP_HLEN};
use crate::wire::{be16, be32, put, put16, put32, Mac};
use core::net::{IpAddr, Ipv6Addr};

/// Port DHCPv6 servers listen on.
pub(crate) const SERVER_PORT: u16 = 547;
/// Port DHCPv6 clients listen on.
pub(crate) const CLIENT_PORT: u16 = 546;

// Message types (RFC 8415 §7.3).
pub(crate) const SOLICIT: u8 = 1;
pub(crate) const ADVERTISE: u8 = 2;
pub(crate) const REQUEST: u8 = 3;
pub(crate) const CONFIRM: u8 = 4;
pub(crate) const RENEW: u8 = 5;
pub(crate) const REBIND: u8 = 6;
pub(crate) const REPLY: u8 = 7;
pub(crate) const RELEASE: u8 = 8;
pub(crate) const DECLINE: u8 = 9;
pub(crate) const INFORMATION_REQUEST: u8 = 11;
pub(crate) const RELAY_FORW: u8 = 12;
pub(crate) const RELAY_REPL: u8 = 13;

// Option codes (RFC 8415 §21, RFC 3646).
pub(crate) const OPT_CLIENTID: u16 = 1;
pub(crate) const OPT_SERVERID: u16 = 2;
pub(crate) const OPT_IA_NA: u16 = 3;
pub(crate) const OPT_IA_TA: u16 = 4;
pub(crate) const OPT_IAADDR: u16 = 5;
pub(crate) const OPT_STATUS_CODE: u16 = 13;
pub(crate) const OPT_DNS_SERVERS: u16 = 23;
pub(crate) const OPT_DOMAIN_LIST: u16 = 24;

/// Status code: the address is not appropriate for the link.
pub(crate) const STATUS_NOT_ON_LINK: u16 = 4;
/// Text sent with [`STATUS_NOT_ON_LINK`].
const NOT_ON_LINK_TEXT: &[u8] = b"That address does not belong on this link.";

/// Longest DUID accepted in a Client ID (RFC 8415 §11.1).
pub(crate) const MAX_DUID: usize = 128;
/// Length of our DUID-LLT with an Ethernet address.
pub(crate) const SERVER_DUID_LEN: usize = 14;
/// Lifetimes and renewal times sent: infinity.
pub(crate) const INFINITY: u32 = 0xffff_ffff;

/// Option header: code and length.
const OPT_HLEN: usize = 4;
/// Fixed part of an IA_NA: IAID, T1, T2.
const IA_NA_FIXED: usize = 12;
/// Fixed part of an IA_TA: IAID.
const IA_TA_FIXED: usize = 4;
/// Fixed part of an IA Address: address, preferred and valid lifetimes.
const IAADDR_FIXED: usize = 24;
/// Longest encoded domain name (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// Longest label of a domain name.
const MAX_LABEL: usize = 63;

/// Room for the largest reply payload: header, Server ID, IA_NA with an
/// address, Client ID, three resolvers and the longest search list, all
/// inside one control frame.
const MAX_PAYLOAD: usize = CONTROL_FRAME_MAX - l4_offset(true) - UDP_HLEN;
const _: () = assert!(
    4 + (OPT_HLEN + SERVER_DUID_LEN)
        + (OPT_HLEN + IA_NA_FIXED + OPT_HLEN + IAADDR_FIXED)
        + (OPT_HLEN + MAX_DUID)
        + (OPT_HLEN + 16 * crate::config::MAX_DNS)
        + (OPT_HLEN + MAX_NAME * MAX_SEARCH)
        <= MAX_PAYLOAD
);

/// A message, or an option nested in it, runs past its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// One option: its code and its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Opt<'a> {
    pub(crate) code: u16,
    pub(crate) body: &'a [u8],
}

/// Walks the options of an option area; yields one `Err` and stops when an
/// option runs past the end.
#[derive(Clone, Debug)]
pub(crate) struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    pub(crate) fn new(area: &'a [u8]) -> Self {
        Options { rest: area }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<Opt<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest;
        let split = || {
            let code = be16(b, 0)?;
            let end = OPT_HLEN.checked_add(usize::from(be16(b, 2)?))?;
            Some((code, b.get(OPT_HLEN..end)?, b.get(end..)?))
        };
        match split() {
            Some((code, body, rest)) => {
                self.rest = rest;
                Some(Ok(Opt { code, body }))
            }
            None => {
                self.rest = &[];
                Some(Err(Malformed))
            }
        }
    }
}

/// Checks that every option of `area` lies inside it.
fn check_tlvs(area: &[u8]) -> Result<(), Malformed> {
    Options::new(area).try_for_each(|o| o.map(|_| ()))
}

/// Checks the options inside an IA: IA Addresses must hold their fixed part
/// and well-formed options of their own.
fn check_ia_options(area: &[u8]) -> Result<(), Malformed> {
    for o in Options::new(area) {
        let o = o?;
        if o.code == OPT_IAADDR {
            check_tlvs(o.body.get(IAADDR_FIXED..).ok_or(Malformed)?)?;
        }
    }
    Ok(())
}

/// An identity association from a client: IA_NA or IA_TA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ia<'a> {
    /// [`OPT_IA_NA`] or [`OPT_IA_TA`].
    pub(crate) code: u16,
    pub(crate) iaid: u32,
    /// T1 and T2 (zero for IA_TA, which has none).
    pub(crate) t1: u32,
    pub(crate) t2: u32,
    /// The options inside the IA (checked).
    pub(crate) opts: &'a [u8],
}

impl<'a> Ia<'a> {
    /// An IA from a checked option; `None` for other options.
    fn from_opt(o: Opt<'a>) -> Option<Self> {
        let b = o.body;
        match o.code {
            OPT_IA_NA => Some(Ia {
                code: o.code,
                iaid: be32(b, 0)?,
                t1: be32(b, 4)?,
                t2: be32(b, 8)?,
                opts: b.get(IA_NA_FIXED..)?,
            }),
            OPT_IA_TA => Some(Ia {
                code: o.code,
                iaid: be32(b, 0)?,
                t1: 0,
                t2: 0,
                opts: b.get(IA_TA_FIXED..)?,
            }),
            _ => None,
        }
    }

    /// The addresses of the IA Address options inside.
    pub(crate) fn addresses(&self) -> impl Iterator<Item = Ipv6Addr> + 'a {
        Options::new(self.opts)
            .map_while(Result::ok)
            .filter(|o| o.code == OPT_IAADDR)
            .filter_map(|o| <[u8; 16]>::try_from(o.body.get(..16)?).ok())
            .map(Ipv6Addr::from)
    }
}

/// A DHCPv6 message whose whole option structure has been checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Message<'a> {
    pub(crate) msg_type: u8,
    /// Transaction ID, as on the wire.
    pub(crate) xid: [u8; 3],
    /// The options area.
    opts: &'a [u8],
    /// DUID of the first Client ID option (1 to [`MAX_DUID`] bytes).
    pub(crate) client_id: Option<&'a [u8]>,
    /// Body of the first Server ID option.
    pub(crate) server_id: Option<&'a [u8]>,
    /// The first IA_NA.
    pub(crate) ia_na: Option<Ia<'a>>,
    /// Whether any IA_TA is present.
    pub(crate) has_ia_ta: bool,
}

impl<'a> Message<'a> {
    /// Parses a client/server message (not relay messages, whose header
    /// differs): the header, every option, the options inside IA_NA, IA_TA and
    /// IA Address. A Client ID must hold 1 to [`MAX_DUID`] bytes.
    pub(crate) fn parse(b: &'a [u8]) -> Result<Self, Malformed> {
        let (&msg_type, rest) = b.split_first().ok_or(Malformed)?;
        let xid: [u8; 3] = rest
            .get(..3)
            .and_then(|x| x.try_into().ok())
            .ok_or(Malformed)?;
        let opts = rest.get(3..).ok_or(Malformed)?;
        let mut m = Message {
            msg_type,
            xid,
            opts,
            client_id: None,
            server_id: None,
            ia_na: None,
            has_ia_ta: false,
        };
        for o in Options::new(opts) {
            let o = o?;
            match o.code {
                OPT_CLIENTID => {
                    if o.body.is_empty() || o.body.len() > MAX_DUID {
                        return Err(Malformed);
                    }
                    m.client_id.get_or_insert(o.body);
                }
                OPT_SERVERID => {
                    m.server_id.get_or_insert(o.body);
                }
                OPT_IA_NA | OPT_IA_TA => {
                    let ia = Ia::from_opt(o).ok_or(Malformed)?;
                    check_ia_options(ia.opts)?;
                    if o.code == OPT_IA_NA {
                        m.ia_na.get_or_insert(ia);
                    } else {
                        m.has_ia_ta = true;
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }

    /// Every option at the top level, in order.
    pub(crate) fn options(&self) -> impl Iterator<Item = Opt<'a>> + 'a {
        Options::new(self.opts).map_while(Result::ok)
    }

    /// The body of the first option `code`.
    #[cfg(test)]
    pub(crate) fn option(&self, code: u16) -> Option<&'a [u8]> {
        self.options().find(|o| o.code == code).map(|o| o.body)
    }

    /// Every IA_NA and IA_TA, in order.
    pub(crate) fn ias(&self) -> impl Iterator<Item = Ia<'a>> + 'a {
        self.options().filter_map(Ia::from_opt)
    }
}

/// Our DUID: DUID-LLT, hardware type Ethernet, the configured time and our MAC.
pub(crate) fn server_duid(duid_time: u32, mac: Mac) -> [u8; SERVER_DUID_LEN] {
    let mut d = [0u8; SERVER_DUID_LEN];
    let [t0, t1, t2, t3] = duid_time.to_be_bytes();
    let [m0, m1, m2, m3, m4, m5] = mac.0;
    d.copy_from_slice(&[0, 1, 0, 1, t0, t1, t2, t3, m0, m1, m2, m3, m4, m5]);
    d
}

/// The flow label of a reply: upstream passt derives it from the transaction
/// ID (its bytes read little-endian, low 20 bits).
fn flow_label(xid: [u8; 3]) -> u32 {
    (u32::from(xid[2] & 0x0f) << 16) | (u32::from(xid[1]) << 8) | u32::from(xid[0])
}

/// A bounds-checked cursor writing a message into a buffer.
struct Writer<'b> {
    b: &'b mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, s: &[u8]) -> Option<()> {
        put(self.b, self.len, s)?;
        self.len += s.len();
        Some(())
    }

    fn u16(&mut self, v: u16) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    /// Starts an option; returns where its header is, for [`Self::close`].
    fn open(&mut self, code: u16) -> Option<usize> {
        let at = self.len;
        self.u16(code)?;
        self.u16(0)?;
        Some(at)
    }

    /// Sets the length of the option started at `at`.
    fn close(&mut self, at: usize) -> Option<()> {
        let body = self.len.checked_sub(at)?.checked_sub(OPT_HLEN)?;
        put16(self.b, at.checked_add(2)?, u16::try_from(body).ok()?)
    }

    /// A whole option with a given body.
    fn option(&mut self, code: u16, body: &[u8]) -> Option<()> {
        self.u16(code)?;
        self.u16(u16::try_from(body.len()).ok()?)?;
        self.bytes(body)
    }

    /// Writes `name` as uncompressed RFC 1035 labels ending with the root
    /// label. A trailing dot is dropped. Names that cannot be encoded (root
    /// only, empty or over-long labels, over 255 bytes, no room left) are
    /// skipped: the cursor is left where it was. Returns whether the name was
    /// written.
    fn domain_name(&mut self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        let start = self.len;
        let ok = !name.is_empty()
            && name.len() + 2 <= MAX_NAME
            && name
                .split('.')
                .try_for_each(|label| {
                    if label.is_empty() || label.len() > MAX_LABEL {
                        return None;
                    }
                    self.bytes(&[u8::try_from(label.len()).ok()?])?;
                    self.bytes(label.as_bytes())
                })
                .and_then(|()| self.bytes(&[0]))
                .is_some();
        if !ok {
            self.len = start;
        }
        ok
    }
}

/// Writes the Domain Search List option for `names`, if any can be encoded.
fn write_search_list<S: AsRef<str>>(w: &mut Writer<'_>, names: &[S]) -> Option<()> {
    let at = w.open(OPT_DOMAIN_LIST)?;
    let mut any = false;
    for n in names.iter().take(MAX_SEARCH) {
        any |= w.domain_name(n.as_ref());
    }
    if any {
        w.close(at)
    } else {
        w.len = at;
        Some(())
    }
}

/// What a reply carries after the Server ID.
#[derive(Clone, Copy, Debug)]
enum Body<'a> {
    /// The lease: an IA_NA with our address (IAID echoed), then DNS options.
    Lease { iaid: u32 },
    /// INFORMATION-REQUEST: only the DNS options.
    Info,
    /// The client's IA names an address that is not ours.
    NotOnLink(Ia<'a>),
}

/// Writes a reply of type `msg_type` into `b`; returns its length.
fn write_reply(
    b: &mut [u8],
    cfg: &Config,
    msg_type: u8,
    xid: [u8; 3],
    client_id: &[u8],
    body: Body<'_>,
) -> Option<usize> {
    let ip6 = cfg.ip6.as_ref()?;
    let mut w = Writer { b, len: 0 };
    w.bytes(&[msg_type])?;
    w.bytes(&xid)?;
    w.option(OPT_SERVERID, &server_duid(cfg.duid_time, cfg.our_mac))?;
    match body {
        Body::Lease { iaid } => {
            let ia = w.open(OPT_IA_NA)?;
            w.u32(iaid)?;
            w.u32(INFINITY)?;
            w.u32(INFINITY)?;
            let addr = w.open(OPT_IAADDR)?;
            w.bytes(&ip6.addr.octets())?;
            w.u32(INFINITY)?;
            w.u32(INFINITY)?;
            w.close(addr)?;
            w.close(ia)?;
        }
        Body::Info => {}
        Body::NotOnLink(client_ia) => {
            let ia = w.open(client_ia.code)?;
            w.u32(client_ia.iaid)?;
            if client_ia.code == OPT_IA_NA {
                w.u32(client_ia.t1)?;
                w.u32(client_ia.t2)?;
            }
            let status = w.open(OPT_STATUS_CODE)?;
            w.u16(STATUS_NOT_ON_LINK)?;
            w.bytes(NOT_ON_LINK_TEXT)?;
            w.close(status)?;
            w.close(ia)?;
        }
    }
    w.option(OPT_CLIENTID, client_id)?;
    if matches!(body, Body::NotOnLink(_)) {
        return Some(w.len);
    }
    if cfg.features.advertise_dns && !ip6.dns.is_empty() {
        let at = w.open(OPT_DNS_SERVERS)?;
        for a in &ip6.dns {
            w.bytes(&a.octets())?;
        }
        w.close(at)?;
    }
    if cfg.features.advertise_search {
        write_search_list(&mut w, &cfg.search)?;
    }
    Some(w.len)
}

impl Core {
    /// A DHCPv6 message (`msg`, the UDP payload) from the guest to a multicast
    /// address, port 547.
    pub(crate) fn dhcpv6_input(
        &mut self,
        now: Instant,
        eth: &EthHdr,
        ip: &IpHdr,
        sport: u16,
        msg: &[u8],
    ) {
        // Stateless, and replies go to port 546 whatever the source port.
        let _ = (now, sport);
        if let Err(reason) = self.dhcpv6_answer(eth, ip, msg) {
            self.counters.drop(reason);
        }
    }

    fn dhcpv6_answer(&mut self, eth: &EthHdr, ip: &IpHdr, msg: &[u8]) -> Result<(), DropReason> {
        use DropReason::{ServiceIgnored as Ignored, ServiceMalformed as Bad};

        if !self.cfg.features.dhcpv6 {
            return Err(Ignored);
        }
        let (addr, our_ll) = match &self.cfg.ip6 {
            Some(c) if !c.addr.is_unspecified() => (c.addr, c.our_ll),
            _ => return Err(Ignored),
        };
        let client = match ip.src {
            IpAddr::V6(a) if !a.is_unspecified() && !a.is_multicast() => a,
            _ => return Err(Bad),
        };
        if let Some(&RELAY_FORW | &RELAY_REPL) = msg.first() {
            return Err(Ignored);
        }
        let m = Message::parse(msg).map_err(|_| Bad)?;
        let client_id = m.client_id.ok_or(Bad)?;
        let ours = server_duid(self.cfg.duid_time, self.cfg.our_mac);
        let ours_named = m.server_id.map(|s| s == ours);
        let not_on_link = || m.ias().find(|ia| ia.addresses().any(|a| a != addr));
        let lease = Body::Lease {
            iaid: m.ia_na.map_or(0, |ia| ia.iaid),
        };

        let (reply_type, body) = match m.msg_type {
            SOLICIT if ours_named.is_none() => (ADVERTISE, lease),
            REQUEST | RENEW if ours_named == Some(true) => {
                (REPLY, not_on_link().map_or(lease, Body::NotOnLink))
            }
            CONFIRM if ours_named.is_none() => {
                (REPLY, not_on_link().map_or(lease, Body::NotOnLink))
            }
            REBIND if ours_named == Some(true) => (REPLY, lease),
            INFORMATION_REQUEST
                if ours_named != Some(false) && m.ia_na.is_none() && !m.has_ia_ta =>
            {
                (REPLY, Body::Info)
            }
            // Leases are never taken back: nothing to release or decline.
            RELEASE | DECLINE => return Err(Ignored),
            // Server messages, unknown types, a Server ID that is not ours
            // (or one where none may be), IAs in INFORMATION-REQUEST.
            _ => return Err(Ignored),
        };

        let dst_mac = eth.src;
        let xid = m.xid;
        let queued = self.queue_frame(l4_offset(true) + UDP_HLEN + MAX_PAYLOAD, |b, cfg| {
            let off = l4_offset(true) + UDP_HLEN;
            let n = write_reply(b.get_mut(off..)?, cfg, reply_type, xid, client_id, body)?;
            let len = finish_udp_frame(
                b,
                dst_mac,
                cfg.our_mac,
                IpAddr::V6(our_ll),
                IpAddr::V6(client),
                SERVER_PORT,
                CLIENT_PORT,
                n,
            )?;
            // The flow label is not part of the UDP checksum.
            put32(b, ETH_HLEN, (6 << 28) | flow_label(xid))?;
            Some(len)
        });
        if queued {
            self.counters.reply(ReplyKind::Dhcpv6);
            if matches!(body, Body::Lease { .. }) {
                // The guest is about to use the address, as upstream assumes.
                self.guest.ip6_seen = Some(addr);
            }
        }
        Ok(())
    }
}

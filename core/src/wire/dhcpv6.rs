//! DHCPv6 messages (RFC 8415, RFC 3646): parsing client messages, writing
//! replies.
//!
//! Parsing is strict: every option, and every option nested in an IA and in an
//! IA Address, must lie inside its parent, or the message is dropped as
//! malformed.

use super::dns::{encode_name, NAME_MAX};
use super::{be16, be32, put, put16, Mac};
use crate::config::{Config, MAX_DNS, MAX_SEARCH};
use core::net::Ipv6Addr;

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
pub(crate) const OPT_CLIENT_FQDN: u16 = 39;

/// Option 39 flags (RFC 4704 §4.1): S, the server is to update the AAAA
/// record; O, the server overrides the client's S.
pub(crate) const FQDN_S: u8 = 0x01;
pub(crate) const FQDN_O: u8 = 0x02;
/// A reply carries option 39 only if it then fits in the IPv6 minimum MTU
/// with its IPv6 and UDP headers, as upstream passt has it.
pub(crate) const FQDN_REPLY_LIMIT: usize = 1280 - 40 - 8;

/// Status code: the address is not appropriate for the link.
pub(crate) const STATUS_NOT_ON_LINK: u16 = 4;
/// Text sent with [`STATUS_NOT_ON_LINK`].
pub(crate) const NOT_ON_LINK_TEXT: &[u8] = b"That address does not belong on this link.";

/// Longest DUID accepted in a Client ID (RFC 8415 §11.1).
pub(crate) const MAX_DUID: usize = 128;
/// Length of our DUID-LLT with an Ethernet address.
pub(crate) const SERVER_DUID_LEN: usize = 14;
/// Lifetimes and renewal times sent: infinity.
pub(crate) const INFINITY: u32 = 0xffff_ffff;

/// Option header: code and length.
pub(crate) const OPT_HLEN: usize = 4;
/// Fixed part of an IA_NA: IAID, T1, T2.
pub(crate) const IA_NA_FIXED: usize = 12;
/// Fixed part of an IA_TA: IAID.
pub(crate) const IA_TA_FIXED: usize = 4;
/// Fixed part of an IA Address: address, preferred and valid lifetimes.
pub(crate) const IAADDR_FIXED: usize = 24;

/// Longest reply payload: header, Server ID, IA_NA with an address, Client
/// ID, three resolvers and the longest search list.
pub(crate) const REPLY_MAX: usize = 4
    + (OPT_HLEN + SERVER_DUID_LEN)
    + (OPT_HLEN + IA_NA_FIXED + OPT_HLEN + IAADDR_FIXED)
    + (OPT_HLEN + MAX_DUID)
    + (OPT_HLEN + 16 * MAX_DNS)
    + (OPT_HLEN + NAME_MAX * MAX_SEARCH);

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
pub(crate) fn check_tlvs(area: &[u8]) -> Result<(), Malformed> {
    Options::new(area).try_for_each(|o| o.map(|_| ()))
}

/// Checks the options inside an IA: IA Addresses must hold their fixed part
/// and well-formed options of their own.
pub(crate) fn check_ia_options(area: &[u8]) -> Result<(), Malformed> {
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
    /// The flags of the client's option 39, if it sent one.
    pub(crate) fqdn_flags: Option<u8>,
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
            fqdn_flags: None,
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
                OPT_CLIENT_FQDN => {
                    if let Some(&f) = o.body.first() {
                        m.fqdn_flags.get_or_insert(f);
                    }
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
pub(crate) fn flow_label(xid: [u8; 3]) -> u32 {
    (u32::from(xid[2] & 0x0f) << 16) | (u32::from(xid[1]) << 8) | u32::from(xid[0])
}

/// A bounds-checked cursor writing a message into a buffer.
pub(crate) struct Writer<'b> {
    pub(crate) b: &'b mut [u8],
    pub(crate) len: usize,
}

impl Writer<'_> {
    pub(crate) fn bytes(&mut self, s: &[u8]) -> Option<()> {
        put(self.b, self.len, s)?;
        self.len += s.len();
        Some(())
    }

    pub(crate) fn u16(&mut self, v: u16) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    /// Starts an option; returns where its header is, for [`Self::close`].
    pub(crate) fn open(&mut self, code: u16) -> Option<usize> {
        let at = self.len;
        self.u16(code)?;
        self.u16(0)?;
        Some(at)
    }

    /// Sets the length of the option started at `at`.
    pub(crate) fn close(&mut self, at: usize) -> Option<()> {
        let body = self.len.checked_sub(at)?.checked_sub(OPT_HLEN)?;
        put16(self.b, at.checked_add(2)?, u16::try_from(body).ok()?)
    }

    /// A whole option with a given body.
    pub(crate) fn option(&mut self, code: u16, body: &[u8]) -> Option<()> {
        self.u16(code)?;
        self.u16(u16::try_from(body.len()).ok()?)?;
        self.bytes(body)
    }

    /// Writes `name` as uncompressed RFC 1035 labels ending with the root
    /// label. A trailing dot is dropped. Names that cannot be encoded (root
    /// only, empty or over-long labels, over 255 bytes, no room left) are
    /// skipped: the cursor is left where it was. Returns whether the name was
    /// written.
    pub(crate) fn domain_name(&mut self, name: &str) -> bool {
        let n = self
            .b
            .get_mut(self.len..)
            .and_then(|b| encode_name(b, name));
        if let Some(n) = n {
            self.len += n;
        }
        n.is_some()
    }
}

/// Writes the Domain Search List option for `names`, if any can be encoded.
pub(crate) fn write_search_list<S: AsRef<str>>(w: &mut Writer<'_>, names: &[S]) -> Option<()> {
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
pub(crate) enum Body<'a> {
    /// The lease: an IA_NA with our address (IAID echoed), then DNS options
    /// and the FQDN.
    Lease { iaid: u32 },
    /// INFORMATION-REQUEST: only the DNS options and the FQDN.
    Info,
    /// The client's IA names an address that is not ours.
    NotOnLink(Ia<'a>),
}

/// Writes a reply of type `msg_type` into `b`; returns its length.
/// `client_fqdn` holds the flags of the client's option 39, if any.
pub(crate) fn write_reply(
    b: &mut [u8],
    cfg: &Config,
    msg_type: u8,
    xid: [u8; 3],
    client_id: &[u8],
    body: Body<'_>,
    client_fqdn: Option<u8>,
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
    if let Some(fqdn) = cfg.fqdn.as_deref() {
        write_fqdn(&mut w, fqdn, client_fqdn)?;
    }
    Some(w.len)
}

/// Writes option 39 (RFC 4704) with `fqdn` in wire format, as upstream
/// passt since 2025: flags O if the client set S (we update no DNS record),
/// else none. Left out if the name cannot be encoded or the reply would not
/// fit in [`FQDN_REPLY_LIMIT`].
pub(crate) fn write_fqdn(w: &mut Writer<'_>, fqdn: &str, client_flags: Option<u8>) -> Option<()> {
    let at = w.len;
    let flags = match client_flags {
        Some(f) if f & FQDN_S != 0 => FQDN_O,
        _ => 0,
    };
    let fits = w.open(OPT_CLIENT_FQDN).is_some()
        && w.bytes(&[flags]).is_some()
        && w.domain_name(fqdn)
        && w.len <= FQDN_REPLY_LIMIT;
    if fits {
        w.close(at)
    } else {
        log::debug!("DHCPv6: no room for the FQDN {fqdn}");
        w.len = at;
        Some(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decodes uncompressed RFC 1035 names, checking every length.
    pub(crate) fn decode_names(mut b: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        while !b.is_empty() {
            let mut labels = Vec::new();
            loop {
                let (&l, rest) = b.split_first().expect("name runs past the option");
                b = rest;
                if l == 0 {
                    break;
                }
                assert!(l <= 63, "label length {l}");
                labels.push(
                    std::str::from_utf8(&b[..usize::from(l)])
                        .unwrap()
                        .to_owned(),
                );
                b = &b[usize::from(l)..];
            }
            assert!(!labels.is_empty(), "root-only name sent");
            names.push(labels.join("."));
        }
        names
    }

    #[test]
    fn search_list_encoding_skips_what_cannot_be_encoded() {
        let long_label = "a".repeat(64);
        let max_label = "b".repeat(63);
        // 253 characters: 255 bytes encoded, the longest allowed.
        let longest = [
            &"c".repeat(63)[..],
            &"d".repeat(63),
            &"e".repeat(63),
            &"f".repeat(61),
        ]
        .join(".");
        assert_eq!(longest.len(), 253);
        let too_long = format!("g{longest}");
        let names = [
            "example.org.",
            ".",
            "",
            "a..b",
            ".lead",
            &long_label,
            &max_label,
            &too_long,
            &longest,
        ];
        let mut buf = [0u8; 2048];
        let mut w = Writer {
            b: &mut buf,
            len: 0,
        };
        write_search_list(&mut w, &names).unwrap();
        let n = w.len;
        let o = Options::new(&buf[..n]).next().unwrap().unwrap();
        assert_eq!(o.code, OPT_DOMAIN_LIST);
        assert_eq!(4 + o.body.len(), n);
        // Only the first MAX_SEARCH entries are looked at: the valid names
        // after them are not sent.
        assert_eq!(decode_names(o.body), ["example.org"]);
        let mut w = Writer {
            b: &mut buf,
            len: 0,
        };
        write_search_list(&mut w, &[&max_label[..], &too_long, &longest]).unwrap();
        let n = w.len;
        let o = Options::new(&buf[..n]).next().unwrap().unwrap();
        assert_eq!(decode_names(o.body), [max_label, longest]);
        // Nothing encodable: no option at all.
        let mut w = Writer {
            b: &mut buf,
            len: 0,
        };
        write_search_list(&mut w, &["", ".", "x..y"]).unwrap();
        assert_eq!(w.len, 0);
        // No room: the name is skipped, nothing is left half-written.
        let mut small = [0u8; 10];
        let mut w = Writer {
            b: &mut small,
            len: 0,
        };
        assert!(w.domain_name("abc"));
        assert!(!w.domain_name("defgh"));
        assert_eq!(w.len, 5);
        assert_eq!(&small[..5], &[3, b'a', b'b', b'c', 0]);
    }
}

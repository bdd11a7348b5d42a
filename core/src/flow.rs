//! The flow table: every translated connection or exchange, in one array
//! allocated once.
//!
//! A flow is named by a [`FlowId`], an index into the table. Each entry holds a
//! generation (bumped when the entry is freed, so stale socket ids are told
//! apart), the guest-side 4-tuple and the per-protocol state ([`FlowData`]).
//! Guest frames find their flow through an open-addressing hash table over the
//! guest-side 4-tuple, keyed with SipHash-1-3 from the configured secret (so a
//! guest cannot aim collisions), with linear probing and backward-shift
//! deletion: no tombstones, lookups stay short. Socket events find their flow
//! without any search: the [`SockId`] encodes the flow index, its generation and
//! the side (see [`sock_id`] and [`decode`]).
//!
//! Free entries are kept on a stack; a full table refuses new flows and the
//! caller counts the refusal. Each protocol may hold at most its quota of the
//! entries ([`Limits::tcp_flows`](crate::Limits::tcp_flows) and its
//! siblings), so that a flood of one kind (UDP to many ports, echo requests
//! with many identifiers, half-open TCP handshakes) cannot lock the others
//! out; a refusal for the quota is counted apart
//! ([`DropReason::FlowQuota`]).

use crate::action::SockId;
use crate::counters::DropReason;
use crate::splice::conn::SpliceConn;
use crate::tap::FlowKey;
use crate::tcp::conn::TcpConn;
use crate::time::Instant;
use core::hash::Hasher;
use core::net::{IpAddr, SocketAddr};
use siphasher::sip::SipHasher13;

/// Index of a flow in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FlowId(pub(crate) u32);

/// Per-protocol state of a flow.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum FlowData {
    /// The entry is unused.
    Free,
    /// A TCP connection between the guest and a host socket.
    Tcp(TcpConn),
    /// A UDP flow: a connected host socket per guest-side 4-tuple.
    Udp(DgramFlow),
    /// An ICMP/ICMPv6 echo flow (ports: the guest's echo id) over a ping socket.
    Ping(DgramFlow),
    /// A TCP connection between the host's and the guest's loopback, joined
    /// in the driver (pasta): two sockets, no guest-side 4-tuple.
    Splice(SpliceConn),
    /// A UDP flow between the host's and the guest's loopback, joined in
    /// the driver (pasta): two sockets, keyed by the initiating side.
    UdpSplice(crate::udp::splice_flow::UdpSpliceFlow),
}

/// State of one datagram flow (UDP or echo): its own connected host socket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DgramFlow {
    /// The flow's socket.
    pub(crate) sock: SockId,
    /// Whether the driver holds a socket under `sock`.
    pub(crate) sock_open: bool,
    /// The destination is a multicast or broadcast group: the socket is not
    /// connected, and answers from each unicast peer get flows of their own.
    pub(crate) group: bool,
    /// The TTL or hop limit last set on the socket (the guest's); `None`:
    /// the system's default.
    pub(crate) hop_limit: Option<u8>,
    /// The host-side peer: datagrams go there, replies come from there.
    pub(crate) host: SocketAddr,
    /// Last traffic that keeps the flow alive.
    pub(crate) t_active: Instant,
    /// Datagrams in the last `SendDatagrams`.
    pub(crate) last_send: u32,
}

/// One entry of the table.
#[derive(Debug)]
pub(crate) struct Flow {
    /// Bumped whenever the entry is freed; part of the socket ids.
    pub(crate) gen: u8,
    /// The guest-side 4-tuple, valid while `hashed`.
    pub(crate) key: FlowKey,
    /// Whether `key` is in the hash table.
    hashed: bool,
    /// Hash of `key` (valid while `hashed`).
    hash: u64,
    /// Protocol state.
    pub(crate) data: FlowData,
}

/// Bit set in the ids of listening sockets (and other sockets not tied to a
/// flow); flow sockets never have it.
pub(crate) const LISTENER_BIT: u32 = 1 << 31;
/// Most flows a table can hold: the index has 23 bits in a [`SockId`].
pub(crate) const MAX_FLOWS: usize = (1 << 23) - 1;
const GEN_MASK: u32 = 0x7f;
const EMPTY: u32 = u32::MAX;

/// What a [`SockId`] refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SockRef {
    /// A socket of flow `id` (generation `gen`), on `side` (0: the only
    /// socket of a TCP flow, the accepted one of a spliced flow; 1: the
    /// connected one of a spliced flow).
    Flow { id: FlowId, gen: u8, side: u8 },
    /// A socket outside the flow table (listeners), by its index.
    Other(u32),
}

/// The socket id of side `side` of flow `id` at generation `gen`.
pub(crate) fn sock_id(id: FlowId, gen: u8, side: u8) -> SockId {
    SockId(((u32::from(gen) & GEN_MASK) << 24) | ((id.0 & 0x7f_ffff) << 1) | u32::from(side & 1))
}

/// Where socket `s` belongs.
pub(crate) fn decode(s: SockId) -> SockRef {
    if s.0 & LISTENER_BIT != 0 {
        SockRef::Other(s.0 & !LISTENER_BIT)
    } else {
        SockRef::Flow {
            id: FlowId((s.0 >> 1) & 0x7f_ffff),
            gen: ((s.0 >> 24) & GEN_MASK) as u8,
            side: (s.0 & 1) as u8,
        }
    }
}

/// SipHash-1-3 of guest-side 4-tuples, keyed from the configured secret:
/// the flow table's hash (with the protocol) and TCP's initial sequence
/// numbers (RFC 6528, without it) both take it, each with its own key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TupleHasher {
    k0: u64,
    k1: u64,
}

impl TupleHasher {
    /// Keys from `secret`, the second one XORed with `salt` (distinct uses of
    /// one secret take distinct salts).
    pub(crate) fn new(secret: &[u8; 16], salt: u64) -> Self {
        let mut k = [0u8; 8];
        k.copy_from_slice(&secret[..8]);
        let k0 = u64::from_le_bytes(k);
        k.copy_from_slice(&secret[8..]);
        TupleHasher {
            k0,
            k1: u64::from_le_bytes(k) ^ salt,
        }
    }

    /// The hash of `key`'s addresses and ports, preceded by its protocol if
    /// `with_proto`.
    pub(crate) fn hash(&self, key: &FlowKey, with_proto: bool) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        if with_proto {
            h.write_u8(key.proto);
        }
        for a in [key.src, key.dst] {
            match a {
                IpAddr::V4(a) => h.write(&a.octets()),
                IpAddr::V6(a) => h.write(&a.octets()),
            }
        }
        h.write_u16(key.sport);
        h.write_u16(key.dport);
        h.finish()
    }
}

/// Salt of the flow table's hash key (the plain secret keys sequence
/// numbers).
const FLOW_HASH_SALT: u64 = 0x666c_6f77_7461_626c;

/// The table. All memory is allocated by [`FlowTable::new`].
#[derive(Debug)]
pub(crate) struct FlowTable {
    flows: Vec<Flow>,
    /// Free indices; the next one handed out is at the end.
    free: Vec<u32>,
    /// Open-addressing table of flow indices (`EMPTY` if unused).
    hash: Vec<u32>,
    mask: usize,
    hasher: TupleHasher,
    count: usize,
    /// Flows in use per protocol ([`FlowData::class`]).
    counts: [usize; 3],
    /// Most flows per protocol.
    quotas: [usize; 3],
}

impl FlowData {
    /// Index of the protocol in the per-protocol counts: TCP, UDP, echo.
    fn class(&self) -> Option<usize> {
        match self {
            FlowData::Free => None,
            FlowData::Tcp(_) | FlowData::Splice(_) => Some(0),
            FlowData::Udp(_) | FlowData::UdpSplice(_) => Some(1),
            FlowData::Ping(_) => Some(2),
        }
    }
}

fn unspec() -> FlowKey {
    FlowKey {
        proto: 0,
        src: IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
    }
}

impl FlowTable {
    /// A table of `capacity` flows (at most [`MAX_FLOWS`]) whose hash is keyed
    /// with `secret`.
    pub(crate) fn new(capacity: usize, secret: &[u8; 16]) -> Self {
        let capacity = capacity.min(MAX_FLOWS);
        // Keep the load factor at or below 50 %: probes stay short even when
        // the table is full.
        let buckets = (capacity.max(1) * 2).next_power_of_two();
        let mut flows = Vec::with_capacity(capacity);
        for _ in 0..capacity {
            flows.push(Flow {
                gen: 0,
                key: unspec(),
                hashed: false,
                hash: 0,
                data: FlowData::Free,
            });
        }
        FlowTable {
            flows,
            free: (0..capacity as u32).rev().collect(),
            hash: vec![EMPTY; buckets],
            mask: buckets - 1,
            hasher: TupleHasher::new(secret, FLOW_HASH_SALT),
            count: 0,
            counts: [0; 3],
            quotas: [capacity; 3],
        }
    }

    /// Most flows of TCP, UDP and echo (each at most the capacity).
    pub(crate) fn set_quotas(&mut self, tcp: usize, udp: usize, ping: usize) {
        self.quotas = [tcp, udp, ping];
    }

    /// Capacity of the table.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.flows.len()
    }

    /// Flows in use.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    fn hash_key(&self, key: &FlowKey) -> u64 {
        self.hasher.hash(key, true)
    }

    /// Takes a free entry for `data`; refused (with the reason to count)
    /// if its protocol holds its quota already or the table is full.
    pub(crate) fn alloc(&mut self, data: FlowData) -> Result<FlowId, DropReason> {
        let class = data.class();
        if self.free.is_empty() {
            return Err(DropReason::FlowTableFull);
        }
        if let Some(c) = class {
            if self.counts[c] >= self.quotas[c] {
                return Err(DropReason::FlowQuota);
            }
        }
        let idx = self.free.pop().ok_or(DropReason::FlowTableFull)?;
        let Some(f) = self.flows.get_mut(idx as usize) else {
            return Err(DropReason::FlowTableFull);
        };
        f.data = data;
        f.hashed = false;
        self.count += 1;
        if let Some(c) = class {
            self.counts[c] += 1;
        }
        Ok(FlowId(idx))
    }

    /// Frees `id`: drops its key from the hash and bumps its generation.
    pub(crate) fn free(&mut self, id: FlowId) {
        self.remove_key(id);
        let Some(f) = self.flows.get_mut(id.0 as usize) else {
            return;
        };
        let Some(class) = f.data.class() else {
            return;
        };
        self.counts[class] = self.counts[class].saturating_sub(1);
        f.data = FlowData::Free;
        f.gen = f.gen.wrapping_add(1) & GEN_MASK as u8;
        f.key = unspec();
        self.free.push(id.0);
        self.count -= 1;
    }

    /// The entry `id`, if in use.
    pub(crate) fn get(&self, id: FlowId) -> Option<&Flow> {
        self.flows
            .get(id.0 as usize)
            .filter(|f| !matches!(f.data, FlowData::Free))
    }

    /// The entry `id`, if in use.
    pub(crate) fn get_mut(&mut self, id: FlowId) -> Option<&mut Flow> {
        self.flows
            .get_mut(id.0 as usize)
            .filter(|f| !matches!(f.data, FlowData::Free))
    }

    /// The flow with guest-side 4-tuple `key`.
    pub(crate) fn lookup(&self, key: &FlowKey) -> Option<FlowId> {
        let h = self.hash_key(key);
        let mut i = h as usize & self.mask;
        for _ in 0..self.hash.len() {
            let idx = *self.hash.get(i)?;
            if idx == EMPTY {
                return None;
            }
            if let Some(f) = self.flows.get(idx as usize) {
                if f.hashed && f.hash == h && f.key == *key {
                    return Some(FlowId(idx));
                }
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Files flow `id` under `key`. Returns `false` (and changes nothing) if
    /// another flow already has that key or `id` is not in use.
    pub(crate) fn insert_key(&mut self, id: FlowId, key: FlowKey) -> bool {
        if self.lookup(&key).is_some() {
            return false;
        }
        self.remove_key(id);
        let h = self.hash_key(&key);
        let Some(f) = self.get_mut(id) else {
            return false;
        };
        f.key = key;
        f.hash = h;
        f.hashed = true;
        let mut i = h as usize & self.mask;
        // At most `capacity` entries in at least twice as many buckets: an
        // empty one is always found.
        loop {
            let Some(slot) = self.hash.get_mut(i) else {
                return false;
            };
            if *slot == EMPTY {
                *slot = id.0;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes the key of `id` from the hash (backward-shift deletion).
    pub(crate) fn remove_key(&mut self, id: FlowId) {
        let Some(f) = self.flows.get_mut(id.0 as usize) else {
            return;
        };
        if !f.hashed {
            return;
        }
        f.hashed = false;
        let mut i = f.hash as usize & self.mask;
        // Find the bucket holding `id`.
        let mut found = false;
        for _ in 0..self.hash.len() {
            match self.hash.get(i) {
                Some(&v) if v == id.0 => {
                    found = true;
                    break;
                }
                Some(&EMPTY) | None => break,
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        if !found {
            return;
        }
        // Shift later members of the cluster back into the hole when their
        // home bucket does not lie cyclically in (hole, j].
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let v = self.hash[j];
            if v == EMPTY {
                break;
            }
            let home = self
                .flows
                .get(v as usize)
                .map_or(j, |f| f.hash as usize & self.mask);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.hash[hole] = v;
                hole = j;
            }
        }
        self.hash[hole] = EMPTY;
    }

    /// The datagram flow (UDP or echo) `id`.
    pub(crate) fn dgram_mut(&mut self, id: FlowId) -> Option<&mut DgramFlow> {
        match &mut self.get_mut(id)?.data {
            FlowData::Udp(d) | FlowData::Ping(d) => Some(d),
            _ => None,
        }
    }

    /// The live datagram flow of socket `sock`.
    pub(crate) fn dgram_of(&self, sock: SockId) -> Option<FlowId> {
        let SockRef::Flow { id, gen, side: 0 } = decode(sock) else {
            return None;
        };
        let f = self.get(id)?;
        match &f.data {
            FlowData::Udp(d) | FlowData::Ping(d) if f.gen == gen && d.sock == sock => Some(id),
            _ => None,
        }
    }

    /// Indices of all entries (in use or not), for scans.
    pub(crate) fn indices(&self) -> core::ops::Range<u32> {
        0..self.flows.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TcpConn;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(n: u16) -> FlowKey {
        FlowKey {
            proto: 6,
            src: IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 0, 2)),
            dst: IpAddr::V4(core::net::Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
            sport: 1000 + n,
            dport: 80,
        }
    }

    fn tcp() -> FlowData {
        FlowData::Tcp(TcpConn::default())
    }

    #[test]
    fn sock_ids_round_trip() {
        for (idx, gen, side) in [(0u32, 0u8, 0u8), (5, 3, 1), (MAX_FLOWS as u32 - 1, 127, 1)] {
            let s = sock_id(FlowId(idx), gen, side);
            assert_eq!(s.0 & LISTENER_BIT, 0);
            assert_eq!(
                decode(s),
                SockRef::Flow {
                    id: FlowId(idx),
                    gen,
                    side
                }
            );
        }
        assert_eq!(decode(SockId(LISTENER_BIT | 7)), SockRef::Other(7));
    }

    #[test]
    fn quotas_per_protocol() {
        let mut t = FlowTable::new(5, &[1; 16]);
        t.set_quotas(3, 1, 0);
        let a = t.alloc(tcp()).unwrap();
        let udp = || {
            FlowData::Udp(DgramFlow {
                sock: SockId(0),
                sock_open: false,
                host: SocketAddr::from(([192, 0, 2, 1], 53)),
                t_active: Instant::ZERO,
                last_send: 0,
                group: false,
                hop_limit: None,
            })
        };
        let u = t.alloc(udp()).unwrap();
        assert_eq!(t.alloc(udp()), Err(DropReason::FlowQuota));
        let ping = FlowData::Ping(DgramFlow {
            sock: SockId(0),
            sock_open: false,
            host: SocketAddr::from(([192, 0, 2, 1], 0)),
            t_active: Instant::ZERO,
            last_send: 0,
            group: false,
            hop_limit: None,
        });
        assert_eq!(t.alloc(ping), Err(DropReason::FlowQuota));
        t.alloc(tcp()).unwrap();
        t.alloc(tcp()).unwrap();
        assert_eq!(t.alloc(tcp()), Err(DropReason::FlowQuota), "TCP at 3");
        // Freeing gives the protocol its share back.
        t.free(u);
        t.free(u);
        t.alloc(udp()).unwrap();
        t.free(a);
        t.alloc(tcp()).unwrap();
        assert_eq!(t.count(), 4);
    }

    #[test]
    fn full_table_refuses_and_frees_reuse() {
        let mut t = FlowTable::new(3, &[1; 16]);
        let a = t.alloc(tcp()).unwrap();
        let b = t.alloc(tcp()).unwrap();
        let c = t.alloc(tcp()).unwrap();
        assert_eq!(a, FlowId(0));
        assert_eq!(t.capacity(), 3);
        assert_eq!(t.alloc(tcp()), Err(DropReason::FlowTableFull));
        assert_eq!(t.count(), 3);
        assert!(t.insert_key(b, key(1)));
        assert!(!t.insert_key(c, key(1)), "duplicate key");
        let g = t.get(b).unwrap().gen;
        t.free(b);
        assert!(t.lookup(&key(1)).is_none());
        assert_eq!(t.count(), 2);
        let d = t.alloc(tcp()).unwrap();
        assert_eq!(d, b);
        assert_ne!(t.get(d).unwrap().gen, g);
        t.free(a);
        t.free(a); // double free is harmless
        t.free(c);
        t.free(d);
        assert_eq!(t.count(), 0);
        assert!(t.get(FlowId(99)).is_none());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        Lookup(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..40).prop_map(Op::Insert),
            (0u16..40).prop_map(Op::Remove),
            (0u16..40).prop_map(Op::Lookup),
        ]
    }

    proptest! {
        /// Insert, remove and lookup agree with a `HashMap` model, in a small
        /// table where clusters and wrap-around are common.
        #[test]
        fn matches_model(ops in proptest::collection::vec(op(), 1..300), secret in any::<[u8; 16]>()) {
            let mut t = FlowTable::new(24, &secret);
            let mut model: HashMap<u16, FlowId> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        if model.contains_key(&k) {
                            continue;
                        }
                        match t.alloc(tcp()) {
                            Ok(id) => {
                                prop_assert!(t.insert_key(id, key(k)));
                                model.insert(k, id);
                            }
                            Err(_) => prop_assert_eq!(model.len(), 24),
                        }
                    }
                    Op::Remove(k) => {
                        if let Some(id) = model.remove(&k) {
                            t.free(id);
                        }
                    }
                    Op::Lookup(k) => {
                        prop_assert_eq!(t.lookup(&key(k)), model.get(&k).copied());
                    }
                }
                prop_assert_eq!(t.count(), model.len());
                for (k, id) in &model {
                    prop_assert_eq!(t.lookup(&key(*k)), Some(*id));
                }
            }
        }
    }
}

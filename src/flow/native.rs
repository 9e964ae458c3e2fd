//! netfm's native flow table: bidirectional flows keyed by 5-tuple, with idle and active
//! timeouts, TCP FIN/RST ends and a hard bound on the number of live flows.
//!
//! Keys:
//! - TCP/UDP: the unordered pair of (address, port) endpoints plus the protocol.
//! - ICMP/ICMPv6 echo: the unordered address pair plus the echo identifier, so each `ping`
//!   run is its own flow and request/reply land together.
//! - ICMP/ICMPv6 errors (unreachable, time exceeded, ...): the unordered address pair of the
//!   error packet plus the quoted packet's protocol and ports. Errors about one flow (a
//!   traceroute hop, a closed UDP port) group together; they are not merged into the quoted
//!   flow itself, because a flow's packets must share one token layout.
//! - Other ICMP (neighbour/router discovery, timestamp, ...): the address pair plus the type.
//! - Tunnelled packets (`--tunnels inner`) are keyed by their innermost packet as above,
//!   plus the outermost tunnel's id (VXLAN/Geneve VNI, GRE key, GTP-U TEID, ...), so that
//!   two tenants' overlapping address spaces never share a flow.
//!
//! Live flows sit in a slab. Recency is tracked the CLOCK way, so a packet only writes its
//! own flow: a FIFO holds (time, slot) entries in the order they were queued; when an entry
//! reaches the front and its flow has been active since, the entry is queued again with the
//! flow's latest time instead of the flow being expired. The idle sweep and the choice of a
//! flow to evict are O(1) amortized. The table never holds more than `max_flows` flows: a
//! new flow beyond that evicts the flow whose queued activity is oldest — the least recently
//! active flow, up to flows re-queued during the same sweep (counted in
//! [`FlowStats::flows_evicted`]). Timeouts are exact regardless: every packet checks its own
//! flow's idle, active and close timeouts before joining it. The idle sweep ends at most
//! 16 flows per packet (a quiet stretch can idle out the whole table at once; spread over
//! the next packets, its flows reach the writers as they are finished); which flows end,
//! and how, does not depend on it.
//!
//! This module never reorders packets of a flow and never drops a decoded packet: every
//! packet pushed is counted in exactly one emitted flow.

use super::index::FlowIndex;
use super::{mix64, EndReason, FlowAssembler, FlowRecord, FlowStats};
use crate::decode::{DecodedPacket, IcmpKind};
use crate::process::PrefaultAhead;
use netfm_tokenizer::direction::{native_forward_is_first_src, InternalNetworks};
use netfm_tokenizer::fields::{L4Fields, PROTO_TCP};
use netfm_tokenizer::hint::prefetch_bytes;
use netfm_tokenizer::RelativeSeqAck;
use netfm_tokenizer::{BurstConfig, FlowTokenizer};
use std::collections::VecDeque;
use std::net::IpAddr;

/// Configuration of the native flow table.
#[derive(Clone, Debug)]
pub struct NativeFlowConfig {
    /// A flow with no packet for this long ends (`idle`).
    pub idle_timeout_ns: u64,
    /// A flow open longer than this is cut; the next packet starts a new flow (`active`).
    pub active_timeout_ns: u64,
    /// After FINs in both directions or an RST, a flow ends once it is quiet this long
    /// (late ACKs and retransmitted FINs still join it; a new SYN starts a new flow at once).
    pub tcp_close_timeout_ns: u64,
    /// Most flows held at once; beyond it the least recently active flow is evicted.
    pub max_flows: usize,
    pub bursts: BurstConfig,
    pub internal: InternalNetworks,
}

impl Default for NativeFlowConfig {
    fn default() -> Self {
        NativeFlowConfig {
            idle_timeout_ns: 120 * 1_000_000_000,
            active_timeout_ns: 1800 * 1_000_000_000,
            tcp_close_timeout_ns: 2 * 1_000_000_000,
            max_flows: 262_144,
            bursts: BurstConfig::default(),
            internal: InternalNetworks::netfound_default(),
        }
    }
}

/// Direction-free identity of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    /// The two endpoints as (address bits, port), the lower first; fields laid out apart
    /// so that the key takes 48 bytes rather than 80.
    lo_addr: u128,
    hi_addr: u128,
    lo_port: u16,
    hi_port: u16,
    /// Disambiguates ICMP groups (quoted protocol / echo / type) and is 0 otherwise.
    sub: u32,
    /// The outermost tunnel's id (VNI, GRE key, TEID, ...; 0 without one): flows of two
    /// tenants' overlapping address spaces stay apart. Fits the key's padding.
    tunnel_id: u32,
    protocol: u8,
    /// IPv6 addresses (the bits alone cannot tell `::a.b.c.d` from `a.b.c.d`).
    v6: bool,
}

/// An address as a number: compares and hashes in a few instructions, and orders the
/// addresses of one family as `IpAddr` does.
fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address [`addr_bits`] made these bits of.
fn bits_addr(bits: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(bits.into())
    } else {
        IpAddr::V4((bits as u32).into())
    }
}

fn ordered(a: (u128, u16), b: (u128, u16)) -> ((u128, u16), (u128, u16)) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl FlowKey {
    fn of(p: &DecodedPacket) -> FlowKey {
        let (src, dst) = (addr_bits(p.src), addr_bits(p.dst));
        let (a, b, sub) = match p.icmp {
            None => ((src, p.src_port), (dst, p.dst_port), 0),
            Some(IcmpKind::Echo { identifier, .. }) => {
                ((src, identifier), (dst, identifier), 1 << 16)
            }
            Some(IcmpKind::Error {
                protocol,
                src_port,
                dst_port,
                ..
            }) => {
                // Order the quoted ports like the quoted flow's endpoints so that errors in
                // either direction of one quoted flow share a key.
                let (qp_lo, qp_hi) = if src_port <= dst_port {
                    (src_port, dst_port)
                } else {
                    (dst_port, src_port)
                };
                ((src, qp_lo), (dst, qp_hi), (2 << 16) | protocol as u32)
            }
            Some(IcmpKind::Other) => {
                let icmp_type = match p.fields.l4 {
                    L4Fields::Icmp { icmp_type, .. } => icmp_type,
                    _ => 0,
                };
                ((src, 0), (dst, 0), (3 << 16) | icmp_type as u32)
            }
        };
        let (lo, hi) = ordered(a, b);
        FlowKey {
            lo_addr: lo.0,
            hi_addr: hi.0,
            lo_port: lo.1,
            hi_port: hi.1,
            sub,
            tunnel_id: p.tunnel.id.unwrap_or(0),
            protocol: p.protocol,
            v6: p.src.is_ipv6(),
        }
    }

    /// One endpoint as (address bits, port): the lower one or the higher one.
    fn endpoint(&self, lo: bool) -> (u128, u16) {
        if lo {
            (self.lo_addr, self.lo_port)
        } else {
            (self.hi_addr, self.hi_port)
        }
    }

    fn hash64(&self) -> u64 {
        // Three folded 64x64->128 multiplies over the key's 40 bytes of content (a
        // wyhash-style mix): about half the cost of hashing the fields one by one.
        const S: [u64; 5] = [
            0xa076_1d64_78bd_642f,
            0xe703_7ed1_a0b4_28db,
            0x8ebc_6af0_9c88_c6e3,
            0x5899_65cc_7537_4cc3,
            0x1d8e_4e27_c47d_124f,
        ];
        let fold = |a: u64, b: u64| {
            let m = u128::from(a) * u128::from(b);
            (m as u64) ^ ((m >> 64) as u64)
        };
        // `sub` stays below 2^20 (kind << 16 | value), so the fields do not overlap.
        let tail = u64::from(self.lo_port)
            | u64::from(self.hi_port) << 16
            | u64::from(self.sub) << 32
            | u64::from(self.protocol) << 52
            | u64::from(self.v6) << 60;
        let a = fold(
            self.lo_addr as u64 ^ S[0],
            (self.lo_addr >> 64) as u64 ^ S[1],
        );
        let b = fold(
            self.hi_addr as u64 ^ S[2],
            (self.hi_addr >> 64) as u64 ^ S[3],
        );
        mix64(fold(a ^ S[4] ^ u64::from(self.tunnel_id), b ^ tail))
    }
}

/// Hash of a packet's native flow key: equal for every packet of a flow, whichever
/// direction. The pipeline computes it on the reader thread and hands it to
/// [`NativeFlowTable::push_hashed`], so the flow stage does not hash. The table uses its
/// low 32 bits.
pub fn flow_hash(p: &DecodedPacket) -> u64 {
    FlowKey::of(p).hash64()
}

/// Starts loading every cache line of slot `s`.
fn prefetch_slot(slots: &[Option<Flow>], s: u32) {
    prefetch_bytes(
        slots.as_ptr().wrapping_add(s as usize).cast(),
        std::mem::size_of::<Option<Flow>>(),
    );
}

/// Most idle flows one packet's arrival ends (see [`NativeFlowTable::expire`]). Far more
/// than flows end per packet in the long run (every flow has a packet), so the sweep keeps
/// up; a mass expiry is spread over a few thousand packets.
const EXPIRE_PER_PACKET: usize = 16;

/// How many packets ahead of the current one [`NativeFlowTable::push_batch`] prefetches.
const PREFETCH_AHEAD: usize = 8;

/// Laid out in the order a packet reads it (`repr(C)`): key and times in the first cache
/// line, counters and TCP state next, the tokenizer after.
#[repr(C)]
struct Flow {
    key: FlowKey,
    first_ts: u64,
    last_ts: u64,
    fwd_packets: u64,
    bwd_packets: u64,
    fwd_bytes: u64,
    bwd_bytes: u64,
    relseq: RelativeSeqAck,
    /// Low 32 bits of the key's hash (what the index stores).
    hash: u32,
    /// Bumped each time the slot is reused, so stale queue entries are recognised.
    generation: u32,
    fin_fwd: bool,
    fin_bwd: bool,
    rst: bool,
    /// The side of the flow's first packet (relative seq/ack initiator).
    first_is_fwd: bool,
    /// The forward endpoint (decided on the first packet) is the key's lower one.
    fwd_is_lo: bool,
    /// ICMP: what the first packet says.
    icmp: Option<super::IcmpFlowInfo>,
    /// The tunnel the first packet came through, if any: boxed, since most flows have
    /// none and the slot is on every packet's path (44 inline bytes made the flow stage
    /// measurably slower).
    tunnel: Option<Box<super::FlowTunnel>>,
    tokens: FlowTokenizer,
}

/// A recency entry: the flow in `slot` (if still of `generation`) was active at `ts`.
#[derive(Clone, Copy, Debug)]
struct Recency {
    ts: u64,
    slot: u32,
    generation: u32,
}

impl Flow {
    fn closing(&self) -> bool {
        self.rst || (self.fin_fwd && self.fin_bwd)
    }
}

/// The native flow table. See the module docs for its semantics.
pub struct NativeFlowTable {
    cfg: NativeFlowConfig,
    /// (low 32 bits of the key hash, slot) per live flow: 8 bytes an entry, at most half
    /// full (4 MiB for the default 262,144 flows); keys live in the slots.
    index: FlowIndex,
    /// Faults the slots' pages in ahead of use on a helper thread; declared before `slots`
    /// so that it stops before they are freed.
    prefault: PrefaultAhead,
    slots: Vec<Option<Flow>>,
    free: Vec<u32>,
    /// Generation of the next flow per slot.
    generations: Vec<u32>,
    /// Recency FIFO, see the module docs.
    recency: VecDeque<Recency>,
    /// Latest timestamp seen in the current file (timestamps may step back a little).
    now: u64,
    /// More flows had idled out at `now` than the last sweep ended.
    expiry_pending: bool,
    /// Why the flows [`FlowAssembler::drain`] ends end: the capture's end, or a stop.
    drain_reason: EndReason,
    stats: FlowStats,
}

impl NativeFlowTable {
    pub fn new(cfg: NativeFlowConfig) -> Self {
        // The index starts small and grows (its entries are written when allocated).
        // The slots are reserved for the bound at once (up to a million flows, 350 MB):
        // address space only, the pages are touched as flows arrive, and growing by
        // doubling copied up to 180 MB on a busy capture.
        let cap = cfg.max_flows.min(1024);
        let bound = cfg.max_flows.clamp(1, 1 << 20);
        let slots: Vec<Option<Flow>> = Vec::with_capacity(bound);
        // Packets land on slots at random: with 4 KiB pages nearly every packet costs a TLB
        // miss (the flow stage alone runs ~10% faster on huge pages).
        let reserved = slots.capacity() * std::mem::size_of::<Option<Flow>>();
        crate::process::advise_huge_pages(slots.as_ptr().cast(), reserved);
        NativeFlowTable {
            index: FlowIndex::with_capacity(cap),
            prefault: PrefaultAhead::new(slots.as_ptr().cast(), reserved),
            slots,
            free: Vec::new(),
            generations: Vec::with_capacity(bound),
            recency: VecDeque::with_capacity(cap),
            now: 0,
            expiry_pending: false,
            drain_reason: EndReason::EndOfCapture,
            stats: FlowStats::default(),
            cfg,
        }
    }

    /// Number of live flows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn flow(&self, i: u32) -> &Flow {
        self.slots[i as usize]
            .as_ref()
            .expect("indexed slot is occupied")
    }

    fn remove(&mut self, i: u32, reason: EndReason, out: &mut Vec<FlowRecord>) {
        // Finished where it lies: moving a flow out of its slot first costs a copy of it.
        let Some(f) = self.slots[i as usize].as_mut() else {
            return;
        };
        self.index.remove(f.hash, i);
        self.free.push(i);
        if reason == EndReason::Evicted {
            self.stats.flows_evicted += 1;
        }
        self.stats.flows_emitted += 1;
        let (fwd, bwd) = (f.key.endpoint(f.fwd_is_lo), f.key.endpoint(!f.fwd_is_lo));
        // A packet earlier than the flow's first one (out of time order) moves its start.
        let first_ts = f
            .tokens
            .earliest_ts()
            .map_or(f.first_ts, |t| t.min(f.first_ts));
        out.push(FlowRecord {
            src: bits_addr(fwd.0, f.key.v6),
            dst: bits_addr(bwd.0, f.key.v6),
            src_port: fwd.1,
            dst_port: bwd.1,
            protocol: f.key.protocol,
            first_ts_ns: first_ts,
            last_ts_ns: f.last_ts,
            icmp: f.icmp,
            tunnel: f.tunnel.take().map(|t| *t),
            fwd_packets: f.fwd_packets,
            bwd_packets: f.bwd_packets,
            fwd_bytes: f.fwd_bytes,
            bwd_bytes: f.bwd_bytes,
            end_reason: reason,
            tokens: f.tokens.take_finished(true),
        });
        self.slots[i as usize] = None;
    }

    /// Pops the front of the recency FIFO until it names a live flow whose latest activity
    /// is the queued time (re-queuing flows that were active since). Returns that entry.
    fn oldest(&mut self) -> Option<Recency> {
        while let Some(e) = self.recency.front().copied() {
            match &self.slots[e.slot as usize] {
                Some(f) if f.generation == e.generation => {
                    if f.last_ts > e.ts {
                        let last = f.last_ts;
                        self.recency.pop_front();
                        self.recency.push_back(Recency { ts: last, ..e });
                    } else {
                        return Some(e);
                    }
                }
                _ => {
                    self.recency.pop_front();
                }
            }
        }
        None
    }

    /// Starts loading the flows next in line to be expired or evicted (long out of cache):
    /// the slot of the second entry of the recency FIFO, and the bursts of the first, whose
    /// slot the previous call loaded.
    fn prefetch_victims(&self) {
        if let Some(e) = self.recency.get(1) {
            prefetch_slot(&self.slots, e.slot);
        }
        if let Some(Some(f)) = self
            .recency
            .front()
            .and_then(|e| self.slots.get(e.slot as usize))
        {
            f.tokens.prefetch();
        }
    }

    /// Drops the entries of flows that have ended (by TCP close or timeout checks on
    /// arrival), which otherwise wait in the FIFO until they reach its front. Keeps the FIFO
    /// within twice the flow bound; amortized O(1) per flow.
    fn compact_recency(&mut self) {
        let slots = &self.slots;
        self.recency
            .retain(|e| matches!(&slots[e.slot as usize], Some(f) if f.generation == e.generation));
    }

    /// Ends flows whose idle timeout has passed at `now`, oldest first: at most
    /// [`EXPIRE_PER_PACKET`]; if more are due, [`Self::expiry_pending`] says so and the next
    /// packets go on. A quiet stretch in a capture can idle out the whole table at once;
    /// ended in one go, its flows would all reach the writers after the last of them was
    /// finished, one core busy finishing while the writers wait, then the reverse.
    fn expire(&mut self, now: u64, out: &mut Vec<FlowRecord>) {
        self.expiry_pending = false;
        for _ in 0..EXPIRE_PER_PACKET {
            let Some(e) = self.oldest() else {
                return;
            };
            if !self.idled_out(&e, now) {
                return;
            }
            self.recency.pop_front();
            self.prefetch_victims();
            self.remove(e.slot, EndReason::Idle, out);
        }
        self.expiry_pending = true;
    }

    /// Whether the flow of recency entry `e` (its latest activity) has idled out at `now`.
    fn idled_out(&self, e: &Recency, now: u64) -> bool {
        now.saturating_sub(e.ts) > self.cfg.idle_timeout_ns
    }

    /// Why the flow of recency entry `e` ends when `reason` ends it now: idle if it had
    /// idled out already (its end not yet swept), else `reason`.
    fn idle_or(&self, e: &Recency, reason: EndReason) -> EndReason {
        if self.idled_out(e, self.now) {
            EndReason::Idle
        } else {
            reason
        }
    }

    fn why_ended(&self, f: &Flow, p: &DecodedPacket) -> Option<EndReason> {
        let quiet = p.ts_ns.saturating_sub(f.last_ts);
        if quiet > self.cfg.idle_timeout_ns {
            return Some(EndReason::Idle);
        }
        if f.closing() {
            let syn_only =
                matches!(p.fields.l4, L4Fields::Tcp { flags, .. } if flags & 0x12 == 0x02);
            if syn_only || quiet > self.cfg.tcp_close_timeout_ns {
                return Some(EndReason::TcpClose);
            }
        }
        if p.ts_ns.saturating_sub(f.first_ts) > self.cfg.active_timeout_ns {
            return Some(EndReason::Active);
        }
        None
    }

    /// The slot of the live flow with this key, if any.
    fn lookup(&self, hash: u32, key: &FlowKey) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash, |s| {
            slots[s as usize].as_ref().is_some_and(|f| f.key == *key)
        })
    }

    /// Starts loading the flow a later packet with this key hash will update.
    fn prefetch_flow(&self, hash: u32) {
        if let Some(s) = self.index.find(hash, |_| true) {
            prefetch_slot(&self.slots, s);
        }
    }

    /// [`FlowAssembler::push`] with the packet's [`flow_hash`] already computed.
    pub fn push_hashed(&mut self, p: &DecodedPacket, hash: u64, out: &mut Vec<FlowRecord>) {
        if p.ts_ns > self.now {
            self.now = p.ts_ns;
            self.expire(self.now, out);
        } else if self.expiry_pending {
            self.expire(self.now, out);
        }
        let key = FlowKey::of(p);
        let hash = hash as u32;
        let mut slot = self.lookup(hash, &key);
        if let Some(i) = slot {
            if let Some(reason) = self.why_ended(self.flow(i), p) {
                self.remove(i, reason, out);
                slot = None;
            }
        }
        let i = match slot {
            Some(i) => i,
            None => self.open(key, hash, p, out),
        };
        let Some(f) = self.slots[i as usize].as_mut() else {
            return;
        };
        update(f, p);
    }

    fn open(
        &mut self,
        key: FlowKey,
        hash: u32,
        p: &DecodedPacket,
        out: &mut Vec<FlowRecord>,
    ) -> u32 {
        if self.index.len() >= self.cfg.max_flows.max(1) {
            if let Some(e) = self.oldest() {
                self.recency.pop_front();
                self.prefetch_victims();
                // The oldest flow may have idled out already, its end not yet swept.
                let reason = self.idle_or(&e, EndReason::Evicted);
                self.remove(e.slot, reason, out);
            }
        }
        let src = (addr_bits(p.src), key_port(&key, p, true));
        let src_is_lo = src == key.endpoint(true);
        let lo_is_hi = key.endpoint(true) == key.endpoint(false);
        let first_src_fwd = native_forward_is_first_src(p.src, p.dst, &self.cfg.internal);
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.prefault.filled(
                    self.slots.as_ptr().cast(),
                    self.slots.len() * std::mem::size_of::<Option<Flow>>(),
                );
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.generations[i as usize];
        self.generations[i as usize] = generation.wrapping_add(1);
        // Built in one expression at its slot, not as a named value copied in afterwards.
        self.slots[i as usize] = Some(Flow {
            key,
            hash,
            first_ts: p.ts_ns,
            last_ts: p.ts_ns,
            fwd_packets: 0,
            bwd_packets: 0,
            fwd_bytes: 0,
            bwd_bytes: 0,
            fin_fwd: false,
            fin_bwd: false,
            rst: false,
            relseq: RelativeSeqAck::new(),
            generation,
            // (With both endpoints equal, every packet is forward.)
            first_is_fwd: first_src_fwd || lo_is_hi,
            fwd_is_lo: src_is_lo == first_src_fwd,
            icmp: super::IcmpFlowInfo::of(p),
            tunnel: (p.tunnel.depth > 0).then(|| {
                Box::new(super::FlowTunnel {
                    kind: p.tunnel.kind.name(),
                    outer_src: p.tunnel.outer_src,
                    outer_dst: p.tunnel.outer_dst,
                    id: p.tunnel.id,
                })
            }),
            tokens: FlowTokenizer::new(&self.cfg.bursts, p.fields.l4.protocol()),
        });
        self.index.insert(hash, i);
        self.recency.push_back(Recency {
            ts: p.ts_ns,
            slot: i,
            generation,
        });
        if self.recency.len() > 2 * self.cfg.max_flows.max(1024) {
            self.compact_recency();
        }
        i
    }
}

/// Adds packet `p` to flow `f` (counters, TCP state, tokens).
fn update(f: &mut Flow, p: &DecodedPacket) {
    let fwd = f.key.endpoint(f.fwd_is_lo);
    let forward = addr_bits(p.src) == fwd.0 && (p.icmp.is_some() || p.src_port == fwd.1);
    let ip_bytes = p.fields.total_len as u64;
    if forward {
        f.fwd_packets += 1;
        f.fwd_bytes += ip_bytes;
    } else {
        f.bwd_packets += 1;
        f.bwd_bytes += ip_bytes;
    }
    f.last_ts = f.last_ts.max(p.ts_ns);
    let mut fields = p.fields;
    if let L4Fields::Tcp {
        flags,
        ref mut seq,
        ref mut ack,
        ..
    } = fields.l4
    {
        if flags & 0x04 != 0 {
            f.rst = true;
        }
        if flags & 0x01 != 0 {
            if forward {
                f.fin_fwd = true;
            } else {
                f.fin_bwd = true;
            }
        }
        // The initiator is the first packet's endpoint (not just its address, so that a
        // flow between two ports of one host still has two sides).
        let side = u32::from(forward != f.first_is_fwd);
        let (s, a) = f.relseq.apply(side, *seq, *ack);
        *seq = s;
        *ack = a;
    }
    debug_assert!(p.protocol != PROTO_TCP || matches!(fields.l4, L4Fields::Tcp { .. }));
    f.tokens.push(p.ts_ns, forward, &fields);
}

/// The port an endpoint is reported with: the real port for TCP/UDP, the echo identifier
/// for echo flows, the quoted ports for ICMP errors, 0 otherwise.
fn key_port(key: &FlowKey, p: &DecodedPacket, source: bool) -> u16 {
    if p.icmp.is_none() {
        return if source { p.src_port } else { p.dst_port };
    }
    if (key.lo_addr == addr_bits(p.src)) == source {
        key.lo_port
    } else {
        key.hi_port
    }
}

impl FlowAssembler for NativeFlowTable {
    fn push(&mut self, p: &DecodedPacket, out: &mut Vec<FlowRecord>) {
        self.push_hashed(p, flow_hash(p), out);
    }

    fn push_batch(&mut self, pkts: &[DecodedPacket], hashes: &[u64], out: &mut Vec<FlowRecord>) {
        if hashes.len() != pkts.len() {
            for p in pkts {
                self.push(p, out);
            }
            return;
        }
        // Flows of a busy capture are far apart in memory: start loading the index entries
        // of the packet 2 * PREFETCH_AHEAD ahead, look up (in those, loaded by now) the flow
        // of the packet PREFETCH_AHEAD ahead and start loading it, then process this one.
        for (k, (p, &h)) in pkts.iter().zip(hashes).enumerate() {
            if let Some(&ahead) = hashes.get(k + 2 * PREFETCH_AHEAD) {
                self.index.prefetch(ahead as u32);
            }
            if let Some(&ahead) = hashes.get(k + PREFETCH_AHEAD) {
                self.prefetch_flow(ahead as u32);
            }
            self.push_hashed(p, h, out);
        }
    }

    fn key_hasher(&self) -> Option<fn(&DecodedPacket) -> u64> {
        Some(flow_hash)
    }

    fn end_of_file(&mut self, out: &mut Vec<FlowRecord>) {
        while !self.drain(out, usize::MAX) {}
    }

    fn drain(&mut self, out: &mut Vec<FlowRecord>, max: usize) -> bool {
        for _ in 0..max {
            let Some(e) = self.oldest() else {
                debug_assert!(self.index.is_empty());
                self.now = 0;
                self.expiry_pending = false;
                return true;
            };
            self.recency.pop_front();
            self.prefetch_victims();
            // Flows whose idle timeout had passed, their end not yet swept, ended idle.
            let reason = self.idle_or(&e, self.drain_reason);
            self.remove(e.slot, reason, out);
        }
        false
    }

    fn stats(&self) -> &FlowStats {
        &self.stats
    }

    fn interrupt(&mut self) {
        self.drain_reason = EndReason::Interrupted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// A UDP packet of the flow 10.0.0.1:`port` <-> 192.0.2.1:53 at `ts` seconds.
    fn udp(ts: u64, port: u16) -> DecodedPacket {
        let mut p = DecodedPacket::EMPTY;
        p.ts_ns = ts * S;
        p.src = "10.0.0.1".parse().expect("ip");
        p.dst = "192.0.2.1".parse().expect("ip");
        p.protocol = 17;
        p.src_port = port;
        p.dst_port = 53;
        p.fields.total_len = 40;
        p
    }

    fn table(max_flows: usize) -> NativeFlowTable {
        NativeFlowTable::new(NativeFlowConfig {
            idle_timeout_ns: 10 * S,
            max_flows,
            ..NativeFlowConfig::default()
        })
    }

    fn ports(flows: &[FlowRecord]) -> Vec<u16> {
        flows.iter().map(|f| f.src_port).collect()
    }

    /// A quiet stretch that idles out many flows at once ends them a few per packet,
    /// oldest first, each as idle; none is lost or labelled otherwise.
    #[test]
    fn a_mass_expiry_is_spread_over_the_next_packets() {
        let n = 3 * EXPIRE_PER_PACKET as u16 + 5;
        let mut t = table(1 << 16);
        let mut out = Vec::new();
        for port in 0..n {
            t.push(&udp(1, 1000 + port), &mut out);
        }
        assert!(out.is_empty());
        // 100 s later: every flow has idled out; the first packet ends only some of them.
        t.push(&udp(100, 1), &mut out);
        assert_eq!(out.len(), EXPIRE_PER_PACKET);
        for k in 2..=4 {
            t.push(&udp(100, k), &mut out);
        }
        assert_eq!(
            out.len(),
            n as usize,
            "the sweep goes on at the same timestamp"
        );
        assert!(out.iter().all(|f| f.end_reason == EndReason::Idle));
        assert_eq!(ports(&out), (1000..1000 + n).collect::<Vec<u16>>());
        assert_eq!(t.stats().flows_evicted, 0);
        t.end_of_file(&mut out);
        assert_eq!(out.len(), n as usize + 4);
        assert!(out[n as usize..]
            .iter()
            .all(|f| f.end_reason == EndReason::EndOfCapture));
    }

    /// A full table evicts its least recently active flow, counted as evicted; flows that
    /// idled out end as idle even while their sweep is spread over several packets of
    /// new flows, never as evicted.
    #[test]
    fn evictions_are_counted_and_idled_out_flows_are_not_evicted() {
        let mut t = table(2);
        let mut out = Vec::new();
        t.push(&udp(1, 1), &mut out);
        t.push(&udp(2, 2), &mut out);
        t.push(&udp(3, 3), &mut out);
        assert_eq!(ports(&out), [1]);
        assert_eq!(out[0].end_reason, EndReason::Evicted);
        assert_eq!(t.stats().flows_evicted, 1);

        // Fill a table larger than the sweep's step, then let every flow idle out while
        // new flows arrive.
        let many = EXPIRE_PER_PACKET as u16 + 3;
        let mut t = table(many as usize);
        let mut out = Vec::new();
        for port in 0..many {
            t.push(&udp(1, 100 + port), &mut out);
        }
        t.push(&udp(50, 9), &mut out);
        assert_eq!(out.len(), EXPIRE_PER_PACKET);
        for port in 10..13 {
            t.push(&udp(50, port), &mut out);
        }
        assert_eq!(out.len(), many as usize);
        assert!(out.iter().all(|f| f.end_reason == EndReason::Idle));
        assert_eq!(t.stats().flows_evicted, 0);
    }

    /// Draining in steps ends the same flows as `end_of_file`, in the same order, with
    /// flows that had idled out ending as idle.
    #[test]
    fn draining_in_steps_equals_end_of_file() {
        let fill = |t: &mut NativeFlowTable, out: &mut Vec<FlowRecord>| {
            for port in 0..40 {
                t.push(&udp(1, port), out);
            }
            // Idles out all 40, of which this packet's sweep ends only some.
            t.push(&udp(30, 500), out);
        };
        let (mut a, mut b) = (table(1 << 10), table(1 << 10));
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        fill(&mut a, &mut out_a);
        fill(&mut b, &mut out_b);
        a.end_of_file(&mut out_a);
        let mut steps = 0;
        while !b.drain(&mut out_b, 7) {
            steps += 1;
            assert!(out_b.len() <= out_a.len());
        }
        assert!(steps > 1);
        assert_eq!(out_a, out_b);
        assert_eq!(out_a.len(), 41);
        let idle = out_a
            .iter()
            .filter(|f| f.end_reason == EndReason::Idle)
            .count();
        assert_eq!(idle, 40);
        assert!(a.is_empty() && b.is_empty());
    }
}

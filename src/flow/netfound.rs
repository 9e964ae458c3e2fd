//! netFound mode: flows exactly as netFound's preprocessing forms them from one capture
//! file, quirks included where they shape the output.
//!
//! netFound's pipeline per capture: `1_filter` (packet selection) -> PcapSplitter
//! `-m connection` (one pcap per connection) -> `3_field_extraction` (one binary record per
//! packet, relative TCP seq/ack) -> `Tokenize.py` (bursts and tokens). This assembler
//! reproduces the first three from [`DecodedPacket`]s; the fourth is
//! [`netfm_tokenizer::FlowTokenizer`] plus [`NetfoundDirection`].
//!
//! 1. Packet selection (1_filter): IPv4/IPv6 packets with a whole TCP, UDP or ICMPv4
//!    header. Dropped and counted in [`FlowStats::packets_dropped`]: `icmpv6`,
//!    `ip_fragment` (PcapPlusPlus does not parse L4 inside any fragment, first fragments
//!    included; later fragments never reach here), `truncated_transport` (L4 header cut by
//!    the snaplen), `ipv6_extension_headers` (netFound's stage 3 takes the transport from
//!    the first IPv6 Next Header, finds an extension header, writes a stub file and
//!    Tokenize.py drops it; such packets hash apart from the same connection without
//!    extension headers, so dropping them here changes no other flow).
//! 2. Grouping (PcapSplitter's `FiveTupleSplitter`): the key is PcapPlusPlus's
//!    `hash5Tuple`, a 32-bit FNV-1 hash of the direction-normalised 5-tuple, reproduced
//!    byte for byte (so even its rare collisions group the same way). ICMP packets hash to
//!    0: every ICMP packet of the capture, ICMP errors included, lands in one flow. A TCP
//!    packet that is a pure SYN (SYN set, ACK clear) on a known hash whose previous TCP
//!    packet was *not* a pure SYN starts a new flow (a retransmitted SYN does not).
//! 3. Stage 3: per flow, in capture order: timestamps truncated to microseconds
//!    (PcapSplitter writes microsecond pcaps); relative TCP seq/ack
//!    ([`RelativeSeqAck`], initiator by 32-bit source); a packet whose IP protocol differs
//!    from the flow's first packet ends the flow's records (stage 3 stops there; later
//!    packets are counted as `after_protocol_change`).
//! 4. Stage 4: a flow with more than two distinct 32-bit addresses is dropped
//!    (`flows_dropped["more_than_two_ips"]`); the forward side is netFound's set-order rule.
//!
//! Known deviation: an ICMP error that quotes a complete TCP header counts as a TCP packet
//! in PcapSplitter's SYN rule for hash 0 (the ICMP flow). [`DecodedPacket`] does not carry
//! the quoted TCP flags, so netfm treats ICMP packets as non-TCP there; only captures with
//! several ICMP errors quoting TCP segments could differ.
//!
//! Memory: netFound's grouping is per file and keeps every flow until the file ends; here at
//! most `max_flows` flows are held (each flow's tokens bounded by the streaming tokenizer).
//! Flows are emitted at [`FlowAssembler::end_of_file`] in order of first packet. When a
//! file has more flows than the bound, the least recently active flow (CLOCK order, as in
//! the native table) is emitted early and counted in [`FlowStats::flows_evicted`]; a later
//! packet of its connection then starts a new flow, which netFound would not do. With the
//! default bound (262,144) a file must hold that many connections before it happens.

use super::{EndReason, FlowAssembler, FlowRecord, FlowStats};
use crate::decode::DecodedPacket;
use netfm_tokenizer::direction::{
    netfound_ip32, DirectionError, InternalNetworks, NetfoundDirection,
};
use netfm_tokenizer::fields::{L4Fields, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use netfm_tokenizer::{BurstConfig, FlowTokenizer, RelativeSeqAck};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::net::IpAddr;

/// IP protocol number of ICMPv6.
const PROTO_ICMPV6: u8 = 58;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Reason names used in [`FlowStats`].
pub mod reason {
    pub const ICMPV6: &str = "icmpv6";
    pub const IP_FRAGMENT: &str = "ip_fragment";
    pub const TRUNCATED_TRANSPORT: &str = "truncated_transport";
    pub const IPV6_EXTENSION_HEADERS: &str = "ipv6_extension_headers";
    pub const UNSUPPORTED_TRANSPORT: &str = "unsupported_transport";
    pub const AFTER_PROTOCOL_CHANGE: &str = "after_protocol_change";
    pub const MORE_THAN_TWO_IPS: &str = "more_than_two_ips";
}

/// PcapPlusPlus's `hash5Tuple` (v24.09) for a TCP/UDP packet: FNV-1 over the ports and
/// addresses in network byte order, ordered so both directions hash alike, then the
/// protocol byte. The ordering compares the raw network-order bytes as little-endian
/// integers, exactly as PcapPlusPlus does on x86.
pub fn pcapplusplus_hash5(
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
) -> u32 {
    let mut swap = dst_port.swap_bytes() < src_port.swap_bytes();
    let (sb, db): ([u8; 16], [u8; 16]);
    let ip_len = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if src_port == dst_port
                && u32::from_le_bytes(d.octets()) < u32::from_le_bytes(s.octets())
            {
                swap = true;
            }
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a[..4].copy_from_slice(&s.octets());
            b[..4].copy_from_slice(&d.octets());
            (sb, db) = (a, b);
            4
        }
        _ => {
            let s = to_v6_octets(src);
            let d = to_v6_octets(dst);
            if src_port == dst_port && d < s {
                swap = true;
            }
            (sb, db) = (s, d);
            16
        }
    };
    let sp = src_port.to_be_bytes();
    let dp = dst_port.to_be_bytes();
    let (p0, p1) = if swap { (dp, sp) } else { (sp, dp) };
    let (i0, i1) = if swap {
        (&db[..ip_len], &sb[..ip_len])
    } else {
        (&sb[..ip_len], &db[..ip_len])
    };
    let mut h: u32 = 2_166_136_261;
    for &byte in p0
        .iter()
        .chain(&p1)
        .chain(i0)
        .chain(i1)
        .chain(std::iter::once(&protocol))
    {
        h = h.wrapping_mul(16_777_619);
        h ^= u32::from(byte);
    }
    h
}

fn to_v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// PcapSplitter's flow-table entry for one hash.
#[derive(Clone, Copy, Debug)]
struct SplitterEntry {
    /// Index into `flows` of the flow currently receiving this hash's packets.
    flow: usize,
    /// Whether the hash's last TCP packet was a pure SYN (None before any TCP packet).
    last_tcp_pure_syn: Option<bool>,
}

/// One PcapSplitter output file, as stage 3 and Tokenize.py see it.
struct SplitFlow {
    /// PcapSplitter hash this flow was opened under.
    hash: u32,
    /// Creation order within the file (emission order).
    seq: u64,
    /// Packet counter value at the flow's latest packet (recency for eviction).
    last_seen: u64,
    protocol: u8,
    /// Stage 3 met a packet of another protocol: records end here.
    stopped: bool,
    first_src: IpAddr,
    first_dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    first_src32: u32,
    records: u64,
    first_ts_ns: u64,
    last_ts_ns: u64,
    /// Packets and IP bytes by side (index 1: source == first packet's source).
    packets: [u64; 2],
    bytes: [u64; 2],
    relseq: RelativeSeqAck,
    direction: NetfoundDirection,
    tokens: FlowTokenizer,
}

/// netFound-mode [`FlowAssembler`]. See the module docs.
pub struct NetfoundAssembler {
    bursts: BurstConfig,
    internal: InternalNetworks,
    splitter: FxHashMap<u32, SplitterEntry>,
    /// Slab of open flows; freed slots are reused.
    flows: Vec<Option<SplitFlow>>,
    free: Vec<usize>,
    live: usize,
    max_flows: usize,
    /// (last_seen when queued, slot, seq): CLOCK recency FIFO for eviction.
    recency: VecDeque<(u64, usize, u64)>,
    next_seq: u64,
    packets_seen: u64,
    stats: FlowStats,
}

impl NetfoundAssembler {
    /// `bursts`: burst limits and token layout (`layout.tcp_options` is netFound's
    /// `--tcp_options`); `internal`: netFound's `internalIPs` (only IPv4 networks apply, as
    /// in netFound).
    pub fn new(bursts: BurstConfig, internal: InternalNetworks) -> Self {
        Self::with_max_flows(bursts, internal, usize::MAX)
    }

    /// As [`new`](Self::new), holding at most `max_flows` flows (see the module docs).
    pub fn with_max_flows(
        bursts: BurstConfig,
        internal: InternalNetworks,
        max_flows: usize,
    ) -> Self {
        NetfoundAssembler {
            bursts,
            internal,
            splitter: FxHashMap::default(),
            flows: Vec::new(),
            free: Vec::new(),
            live: 0,
            max_flows: max_flows.max(1),
            recency: VecDeque::new(),
            next_seq: 0,
            packets_seen: 0,
            stats: FlowStats::default(),
        }
    }

    /// Emits the least recently active flow early (the table is full).
    fn evict_one(&mut self, out: &mut Vec<FlowRecord>) {
        while let Some((queued, slot, seq)) = self.recency.pop_front() {
            let Some(f) = self.flows[slot].as_ref().filter(|f| f.seq == seq) else {
                continue;
            };
            if f.last_seen > queued {
                self.recency.push_back((f.last_seen, slot, seq));
                continue;
            }
            let Some(f) = self.flows[slot].take() else {
                continue;
            };
            self.free.push(slot);
            self.live -= 1;
            if self.splitter.get(&f.hash).is_some_and(|e| e.flow == slot) {
                self.splitter.remove(&f.hash);
            }
            self.stats.flows_evicted += 1;
            self.finish_flow(f, EndReason::Evicted, out);
            return;
        }
    }

    fn drop_packet(&mut self, reason: &'static str) {
        *self.stats.packets_dropped.entry(reason).or_default() += 1;
    }

    /// 1_filter's selection. Returns the reason a packet is not kept.
    fn filter(p: &DecodedPacket) -> Option<&'static str> {
        if p.protocol == PROTO_ICMPV6 {
            return Some(reason::ICMPV6);
        }
        if !matches!(p.protocol, PROTO_TCP | PROTO_UDP | PROTO_ICMP)
            || p.fields.l4.protocol() != p.protocol
        {
            return Some(reason::UNSUPPORTED_TRANSPORT);
        }
        if p.first_fragment {
            return Some(reason::IP_FRAGMENT);
        }
        if p.l4_truncated {
            return Some(reason::TRUNCATED_TRANSPORT);
        }
        if p.ipv6_ext_headers {
            return Some(reason::IPV6_EXTENSION_HEADERS);
        }
        None
    }

    fn new_flow(&mut self, p: &DecodedPacket, hash: u32, out: &mut Vec<FlowRecord>) -> usize {
        if self.live >= self.max_flows {
            self.evict_one(out);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let flow = SplitFlow {
            hash,
            seq,
            last_seen: self.packets_seen,
            protocol: p.protocol,
            stopped: false,
            first_src: p.src,
            first_dst: p.dst,
            src_port: p.src_port,
            dst_port: p.dst_port,
            first_src32: netfound_ip32(p.src),
            records: 0,
            first_ts_ns: u64::MAX,
            last_ts_ns: 0,
            packets: [0; 2],
            bytes: [0; 2],
            relseq: RelativeSeqAck::new(),
            direction: NetfoundDirection::new(),
            tokens: FlowTokenizer::new(&self.bursts, p.protocol),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.flows[slot] = Some(flow);
                slot
            }
            None => {
                self.flows.push(Some(flow));
                self.flows.len() - 1
            }
        };
        self.live += 1;
        self.recency.push_back((self.packets_seen, slot, seq));
        if self.recency.len() > 2 * self.live.max(1024) {
            let flows = &self.flows;
            self.recency
                .retain(|&(_, slot, seq)| flows[slot].as_ref().is_some_and(|f| f.seq == seq));
        }
        slot
    }

    /// PcapSplitter `-m connection`: the flow (output file) this packet is written to.
    fn split(&mut self, p: &DecodedPacket, out: &mut Vec<FlowRecord>) -> usize {
        let hash = if p.protocol == PROTO_ICMP {
            0
        } else {
            pcapplusplus_hash5(p.src, p.dst, p.src_port, p.dst_port, p.protocol)
        };
        let tcp_pure_syn = match p.fields.l4 {
            L4Fields::Tcp { flags, .. } if p.protocol == PROTO_TCP => {
                Some(flags & TCP_SYN != 0 && flags & TCP_ACK == 0)
            }
            _ => None,
        };
        match self.splitter.get(&hash).copied() {
            None => {
                let flow = self.new_flow(p, hash, out);
                self.splitter.insert(
                    hash,
                    SplitterEntry {
                        flow,
                        last_tcp_pure_syn: tcp_pure_syn,
                    },
                );
                flow
            }
            Some(mut e) => {
                if let Some(syn) = tcp_pure_syn {
                    if syn && e.last_tcp_pure_syn == Some(false) {
                        e.flow = self.new_flow(p, hash, out);
                    }
                    e.last_tcp_pure_syn = Some(syn);
                    self.splitter.insert(hash, e);
                }
                e.flow
            }
        }
    }

    fn finish_flow(&mut self, f: SplitFlow, end_reason: EndReason, out: &mut Vec<FlowRecord>) {
        let forward = match f.direction.resolve(&self.internal) {
            Ok(ip) => ip,
            Err(DirectionError::MoreThanTwoIps) => {
                *self
                    .stats
                    .flows_dropped
                    .entry(reason::MORE_THAN_TWO_IPS)
                    .or_default() += 1;
                return;
            }
            Err(DirectionError::Empty) => return,
        };
        let forward_side = forward == f.first_src32;
        let tokens = f.tokens.finish_with_forward_side(forward_side);
        if tokens.bursts.is_empty() {
            return;
        }
        let (fwd, bwd) = (usize::from(forward_side), usize::from(!forward_side));
        let (src, dst, src_port, dst_port) = if forward_side {
            (f.first_src, f.first_dst, f.src_port, f.dst_port)
        } else {
            (f.first_dst, f.first_src, f.dst_port, f.src_port)
        };
        self.stats.flows_emitted += 1;
        out.push(FlowRecord {
            src,
            dst,
            src_port,
            dst_port,
            protocol: f.protocol,
            first_ts_ns: f.first_ts_ns,
            last_ts_ns: f.last_ts_ns,
            icmp: None,
            tunnel: None,
            fwd_packets: f.packets[fwd],
            bwd_packets: f.packets[bwd],
            fwd_bytes: f.bytes[fwd],
            bwd_bytes: f.bytes[bwd],
            end_reason,
            tokens,
        });
    }
}

impl FlowAssembler for NetfoundAssembler {
    fn push(&mut self, p: &DecodedPacket, out: &mut Vec<FlowRecord>) {
        if let Some(why) = Self::filter(p) {
            self.drop_packet(why);
            return;
        }
        self.packets_seen += 1;
        let idx = self.split(p, out);
        let Some(f) = self.flows[idx].as_mut() else {
            return;
        };
        f.last_seen = self.packets_seen;
        if f.stopped || p.protocol != f.protocol {
            f.stopped = true;
            self.drop_packet(reason::AFTER_PROTOCOL_CHANGE);
            return;
        }
        // PcapSplitter writes microsecond pcaps.
        let ts = p.ts_ns / 1000 * 1000;
        let src32 = netfound_ip32(p.src);
        let mut fields = p.fields;
        if let L4Fields::Tcp {
            ref mut seq,
            ref mut ack,
            ..
        } = fields.l4
        {
            (*seq, *ack) = f.relseq.apply(src32, *seq, *ack);
        }
        f.direction
            .observe((ts, f.records), src32, netfound_ip32(p.dst));
        f.records += 1;
        f.first_ts_ns = f.first_ts_ns.min(ts);
        f.last_ts_ns = f.last_ts_ns.max(ts);
        let side = src32 == f.first_src32;
        f.packets[usize::from(side)] += 1;
        f.bytes[usize::from(side)] += u64::from(fields.total_len);
        if !f.direction.has_more_than_two_ips() {
            f.tokens.push(ts, side, &fields);
        }
    }

    fn end_of_file(&mut self, out: &mut Vec<FlowRecord>) {
        self.splitter.clear();
        self.recency.clear();
        self.free.clear();
        self.live = 0;
        let mut flows: Vec<SplitFlow> = std::mem::take(&mut self.flows)
            .into_iter()
            .flatten()
            .collect();
        flows.sort_unstable_by_key(|f| f.seq);
        for f in flows {
            self.finish_flow(f, EndReason::EndOfCapture, out);
        }
    }

    fn stats(&self) -> &FlowStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netfm_tokenizer::fields::PacketFields;

    fn fnv(bytes: &[u8]) -> u32 {
        bytes.iter().fold(2_166_136_261u32, |h, &b| {
            h.wrapping_mul(16_777_619) ^ u32::from(b)
        })
    }

    #[test]
    fn hash5_is_symmetric_and_matches_pcapplusplus_byte_order() {
        let a: IpAddr = "141.142.228.5".parse().unwrap();
        let b: IpAddr = "192.150.187.43".parse().unwrap();
        let h = pcapplusplus_hash5(a, b, 59856, 80, 6);
        assert_eq!(h, pcapplusplus_hash5(b, a, 80, 59856, 6));
        // Ports compared as little-endian reads of network bytes: 80 = 00 50 -> 0x5000,
        // 59856 = e9 d0 -> 0xd0e9, so 80 comes first.
        let want = fnv(&[
            0x00, 0x50, 0xe9, 0xd0, 192, 150, 187, 43, 141, 142, 228, 5, 6,
        ]);
        assert_eq!(h, want);
        assert_ne!(h, pcapplusplus_hash5(a, b, 59856, 80, 17));
    }

    #[test]
    fn hash5_equal_ports_orders_addresses() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            pcapplusplus_hash5(a, b, 123, 123, 17),
            pcapplusplus_hash5(b, a, 123, 123, 17)
        );
        let a6: IpAddr = "2001:db8::1".parse().unwrap();
        let b6: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(
            pcapplusplus_hash5(a6, b6, 5353, 5353, 17),
            pcapplusplus_hash5(b6, a6, 5353, 5353, 17)
        );
    }

    fn tcp(
        ts_us: u64,
        (src, sport): (&str, u16),
        (dst, dport): (&str, u16),
        flags: u8,
        seq: u32,
        ack: u32,
    ) -> DecodedPacket {
        DecodedPacket {
            ts_ns: ts_us * 1000,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: PROTO_TCP,
            src_port: sport,
            dst_port: dport,
            icmp: None,
            fields: PacketFields {
                ip_header_len: 20,
                tos: 0,
                total_len: 40,
                ip_flags: 2,
                ttl: 64,
                l4: L4Fields::Tcp {
                    flags,
                    window: 1000,
                    seq,
                    ack,
                    urgent: 0,
                    options: [0; 40],
                },
                payload: [0; 12],
            },
            wire_len: 54,
            captured_len: 54,
            l4_truncated: false,
            first_fragment: false,
            ipv6_ext_headers: false,
            vlan_tagged: false,
            ..DecodedPacket::EMPTY
        }
    }

    #[test]
    fn new_syn_after_non_syn_starts_a_new_flow() {
        let mut a =
            NetfoundAssembler::new(BurstConfig::default(), InternalNetworks::netfound_default());
        let mut out = Vec::new();
        let c = "10.0.0.1";
        let s = "10.0.0.2";
        a.push(&tcp(0, (c, 1000), (s, 80), TCP_SYN, 100, 0), &mut out);
        a.push(&tcp(1, (c, 1000), (s, 80), TCP_SYN, 100, 0), &mut out); // retransmitted SYN: same flow
        a.push(
            &tcp(2, (s, 80), (c, 1000), TCP_SYN | TCP_ACK, 500, 101),
            &mut out,
        );
        a.push(&tcp(3, (c, 1000), (s, 80), TCP_ACK, 101, 501), &mut out);
        a.push(
            &tcp(100_000, (c, 1000), (s, 80), TCP_SYN, 9000, 0),
            &mut out,
        ); // new connection
        a.push(
            &tcp(100_001, (s, 80), (c, 1000), TCP_SYN | TCP_ACK, 7000, 9001),
            &mut out,
        );
        assert!(out.is_empty());
        a.end_of_file(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].fwd_packets + out[0].bwd_packets, 4);
        assert_eq!(out[1].fwd_packets + out[1].bwd_packets, 2);
        // Relative seq/ack restart with the new flow: its SYN-ACK has seq 0, ack 1.
        let (_, synack) = out[1]
            .tokens
            .bursts_with_tokens()
            .find(|(b, _)| !b.forward)
            .expect("backward burst");
        assert_eq!(&synack[7..11], &[0, 0, 0, 1]);
        assert_eq!(a.stats().flows_emitted, 2);
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let mut a =
            NetfoundAssembler::new(BurstConfig::default(), InternalNetworks::netfound_default());
        let mut out = Vec::new();
        let mut p = tcp(0, ("10.0.0.1", 1), ("10.0.0.2", 2), TCP_ACK, 1, 1);
        p.l4_truncated = true;
        a.push(&p, &mut out);
        let mut p = tcp(0, ("10.0.0.1", 1), ("10.0.0.2", 2), TCP_ACK, 1, 1);
        p.first_fragment = true;
        a.push(&p, &mut out);
        a.end_of_file(&mut out);
        assert!(out.is_empty());
        assert_eq!(
            a.stats().packets_dropped.get(reason::TRUNCATED_TRANSPORT),
            Some(&1)
        );
        assert_eq!(a.stats().packets_dropped.get(reason::IP_FRAGMENT), Some(&1));
    }

    #[test]
    fn microsecond_truncation_and_forward_orientation() {
        let mut a =
            NetfoundAssembler::new(BurstConfig::default(), InternalNetworks::netfound_default());
        let mut out = Vec::new();
        // External client to an internal (127/8) server: the server is forward.
        let mut p = tcp(0, ("8.8.8.8", 5000), ("127.0.0.1", 80), TCP_SYN, 1, 0);
        p.ts_ns = 1_999;
        a.push(&p, &mut out);
        a.end_of_file(&mut out);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!((r.src, r.src_port), ("127.0.0.1".parse().unwrap(), 80));
        assert_eq!((r.fwd_packets, r.bwd_packets), (0, 1));
        assert_eq!(r.first_ts_ns, 1000);
        assert!(!r.tokens.bursts[0].forward);
    }
}

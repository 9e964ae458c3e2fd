//! Flow stages: group decoded packets into flows (native bidirectional table in
//! [`native`], or netFound's PcapSplitter semantics in [`netfound`]) and hand each finished
//! flow, tokenized, to a sink as a [`FlowRecord`].
//!
//! Flows never span capture files: each file is its own flow namespace (as in netFound,
//! whose splitter works per file), which also makes `--shard` slices independent.

pub(crate) mod index;
pub mod native;
pub mod netfound;

use crate::decode::DecodedPacket;
use netfm_tokenizer::TokenizedFlow;
use std::net::IpAddr;

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// No packet for the idle timeout.
    Idle,
    /// Open longer than the active timeout.
    Active,
    /// TCP FIN seen in both directions (or FIN then final ACK) / RST.
    TcpClose,
    /// Evicted to keep the table within `--max-flows`.
    Evicted,
    /// End of the capture file.
    EndOfCapture,
    /// The run was stopped (SIGINT/SIGTERM) while the flow was open.
    Interrupted,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Active => "active",
            EndReason::TcpClose => "tcp_close",
            EndReason::Evicted => "evicted",
            EndReason::EndOfCapture => "end_of_capture",
            EndReason::Interrupted => "interrupted",
        }
    }
}

/// One finished, tokenized flow. Addresses and ports are oriented forward (see the
/// direction rule in `netfm_tokenizer`): `src` is the forward side.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol (6, 17, 1, 58).
    pub protocol: u8,
    /// The flow's earliest and latest packet times (packets out of time order included).
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// ICMP/ICMPv6: what the flow's first packet says (the port fields of an ICMP flow
    /// hold its grouping key, not ports).
    pub icmp: Option<IcmpFlowInfo>,
    /// The tunnel the flow's first packet came through (native mode, `--tunnels inner`).
    pub tunnel: Option<FlowTunnel>,
    pub fwd_packets: u64,
    pub bwd_packets: u64,
    /// IP-layer bytes (sum of IP total lengths) per direction.
    pub fwd_bytes: u64,
    pub bwd_bytes: u64,
    pub end_reason: EndReason,
    pub tokens: TokenizedFlow,
}

/// What an ICMP/ICMPv6 flow's first packet says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpFlowInfo {
    pub icmp_type: u8,
    pub code: u8,
    /// Echo request/reply: the identifier.
    pub identifier: Option<u16>,
    /// Errors: the quoted packet's protocol, source and destination port.
    pub quoted: Option<(u8, u16, u16)>,
}

impl IcmpFlowInfo {
    /// The info of a decoded ICMP/ICMPv6 packet (None for other packets).
    pub fn of(p: &DecodedPacket) -> Option<IcmpFlowInfo> {
        let netfm_tokenizer::L4Fields::Icmp { icmp_type, code } = p.fields.l4 else {
            return None;
        };
        let (identifier, quoted) = match p.icmp {
            Some(crate::decode::IcmpKind::Echo { identifier, .. }) => (Some(identifier), None),
            Some(crate::decode::IcmpKind::Error {
                protocol,
                src_port,
                dst_port,
                ..
            }) => (None, Some((protocol, src_port, dst_port))),
            _ => (None, None),
        };
        Some(IcmpFlowInfo {
            icmp_type,
            code,
            identifier,
            quoted,
        })
    }
}

/// The outermost tunnel a flow's first packet was carried in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTunnel {
    /// The encapsulation's name (`vxlan`, `gre`, ...).
    pub kind: &'static str,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// VXLAN/Geneve VNI, GRE key, GTP-U TEID, ERSPAN session id.
    pub id: Option<u32>,
}

/// Counters a flow stage reports for the run summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub flows_emitted: u64,
    /// Flows evicted early because the table was full.
    pub flows_evicted: u64,
    /// Flows a netFound rule drops (e.g. more than two IPs), by reason name.
    pub flows_dropped: std::collections::BTreeMap<&'static str, u64>,
    /// Packets the flow stage refused, by reason name (e.g. netFound mode drops ICMPv6).
    pub packets_dropped: std::collections::BTreeMap<&'static str, u64>,
}

/// splitmix64's finalizer: spreads every bit of `z` over all 64 bits of the result (flow
/// key hashes, flow ids).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A flow stage. The driver calls `push` for each decoded packet of one capture file in
/// capture order, then `end_of_file`. Finished flows are appended to `out`.
pub trait FlowAssembler {
    fn push(&mut self, pkt: &DecodedPacket, out: &mut Vec<FlowRecord>);
    /// Pushes a batch of packets in order. `hashes` is empty, or holds each packet's key
    /// hash from [`FlowAssembler::key_hasher`], computed ahead on another thread.
    fn push_batch(&mut self, pkts: &[DecodedPacket], hashes: &[u64], out: &mut Vec<FlowRecord>) {
        let _ = hashes;
        for p in pkts {
            self.push(p, out);
        }
    }
    /// The key hash this stage can take precomputed in [`FlowAssembler::push_batch`], if any.
    fn key_hasher(&self) -> Option<fn(&DecodedPacket) -> u64> {
        None
    }
    fn end_of_file(&mut self, out: &mut Vec<FlowRecord>);
    /// [`FlowAssembler::end_of_file`] in steps: ends at most `max` flows (more where a
    /// stage cannot split its end) and returns true once the file's flows are all out, so
    /// that the driver can hand finished flows on while the rest are being finished.
    fn drain(&mut self, out: &mut Vec<FlowRecord>, max: usize) -> bool {
        let _ = max;
        self.end_of_file(out);
        true
    }
    fn stats(&self) -> &FlowStats;
    /// The run is stopping early: the flows [`FlowAssembler::drain`] ends from now on end
    /// as [`EndReason::Interrupted`] rather than at the end of their capture.
    fn interrupt(&mut self) {}
}

//! Link layer -> IP -> transport decoding: turns one captured frame into the flow key parts
//! and the [`PacketFields`] the tokenizer needs, or a counted [`SkipReason`].
//!
//! Link headers ([`link`]) and transport headers ([`transport`]) are fixed offsets read
//! here; the IP layer ([`ip`]: IPv4 options, IPv6 extension chains, fragments) is parsed
//! with etherparse. Fields are filled exactly as netFound's stage 3 writes them (see
//! `../shared/conformance/netfound/README.md`, "Field layout").
//!
//! Decisions that shape what flows see:
//! - A non-first IP fragment is skipped ([`SkipReason::IpFragment`]); a first fragment is
//!   decoded and marked `first_fragment` (netFound mode drops it, native mode keeps it).
//! - A transport header cut by the snaplen keeps what is present (missing fields are zero,
//!   the payload is all zero) and is marked `l4_truncated`; without even the ports (TCP/UDP)
//!   or the type and code (ICMP) it is [`SkipReason::TruncatedTransport`].
//! - An IPv4 total length below the header length is [`SkipReason::MalformedIp`]; a link
//!   type's IP version must match the version nibble (raw IP, LINKTYPE 101, takes either).
//!
//! This module never panics on any input, never allocates, and never looks at anything
//! beyond one frame (no state between packets).

mod ip;
mod link;
mod transport;

use crate::capture::Frame;
use netfm_tokenizer::PacketFields;
use std::net::IpAddr;

/// Data link types netfm decodes (values are LINKTYPE_* numbers from the pcap spec).
pub mod linktype {
    pub const NULL: u32 = 0; // BSD loopback, host-endian 4-byte AF
    pub const ETHERNET: u32 = 1;
    pub const RAW: u32 = 101; // raw IPv4/IPv6 (DLT_RAW)
    pub const LOOP: u32 = 108; // OpenBSD loopback, network-endian AF
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

/// What the decoder makes of an ICMP/ICMPv6 packet beyond its type and code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    /// Echo request/reply: identifier.
    Echo { identifier: u16, request: bool },
    /// Error (dest unreachable, time exceeded, ...) quoting the offending packet's header:
    /// the quoted packet's addresses, protocol and ports (ports 0 when not present).
    Error { src: IpAddr, dst: IpAddr, protocol: u8, src_port: u16, dst_port: u16 },
    /// Anything else (router/neighbour discovery, timestamp, ...).
    Other,
}

/// One decoded packet: the flow key parts, the fields to tokenize, and facts the flow
/// stages need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedPacket {
    /// Capture timestamp in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol of the transport actually decoded: 6, 17, 1 (ICMP) or 58 (ICMPv6).
    pub protocol: u8,
    /// 0 for ICMP.
    pub src_port: u16,
    pub dst_port: u16,
    /// Set for ICMP and ICMPv6.
    pub icmp: Option<IcmpKind>,
    /// Header fields as netFound tokenizes them (TCP seq/ack still absolute).
    pub fields: PacketFields,
    /// The frame's original length on the wire (pcap orig_len).
    pub wire_len: u32,
    /// Bytes of the frame that were captured (pcap caplen).
    pub captured_len: u32,
    /// The L4 header was cut short by the snaplen; missing fields are zero.
    pub l4_truncated: bool,
    /// This is the first fragment of a fragmented IP datagram (MF set, offset 0).
    pub first_fragment: bool,
    /// The IPv6 header chain held extension headers before the transport.
    pub ipv6_ext_headers: bool,
    /// The frame carried one or more 802.1Q/802.1ad tags.
    pub vlan_tagged: bool,
}

/// Why a frame produced no [`DecodedPacket`]. Each reason is counted in the run summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The capture's link type is not one netfm decodes.
    UnsupportedLinkType,
    /// The frame is too short for its link-layer header.
    TruncatedLinkHeader,
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NotIp,
    /// The IP header is malformed (bad version, header length, total length).
    MalformedIp,
    /// The IP header is cut by the snaplen.
    TruncatedIp,
    /// A non-first IP fragment (no transport header to tokenize).
    IpFragment,
    /// A transport netfm does not tokenize (SCTP, GRE, ESP, ...).
    UnsupportedTransport,
    /// The transport header is cut and the mode requires it whole (netFound mode).
    TruncatedTransport,
    /// The transport header is malformed (e.g. TCP data offset < 5).
    MalformedTransport,
}

impl SkipReason {
    pub const ALL: [SkipReason; 9] = [
        SkipReason::UnsupportedLinkType,
        SkipReason::TruncatedLinkHeader,
        SkipReason::NotIp,
        SkipReason::MalformedIp,
        SkipReason::TruncatedIp,
        SkipReason::IpFragment,
        SkipReason::UnsupportedTransport,
        SkipReason::TruncatedTransport,
        SkipReason::MalformedTransport,
    ];

    /// Stable snake_case name used in summaries and JSON.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::UnsupportedLinkType => "unsupported_link_type",
            SkipReason::TruncatedLinkHeader => "truncated_link_header",
            SkipReason::NotIp => "not_ip",
            SkipReason::MalformedIp => "malformed_ip",
            SkipReason::TruncatedIp => "truncated_ip",
            SkipReason::IpFragment => "ip_fragment",
            SkipReason::UnsupportedTransport => "unsupported_transport",
            SkipReason::TruncatedTransport => "truncated_transport",
            SkipReason::MalformedTransport => "malformed_transport",
        }
    }
}

/// Decodes one frame of link type `linktype` (a LINKTYPE_* number) captured at `ts_ns`
/// with on-the-wire length `orig_len`.
pub fn decode(linktype: u32, data: &[u8], ts_ns: u64, orig_len: u32) -> Result<DecodedPacket, SkipReason> {
    let link = link::strip(linktype, data)?;
    let net = ip::parse(link.ip, link.version)?;
    let l4 = transport::parse(net.protocol, net.payload)?;
    Ok(DecodedPacket {
        ts_ns,
        src: net.src,
        dst: net.dst,
        protocol: net.protocol,
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        icmp: l4.icmp,
        fields: PacketFields {
            ip_header_len: net.header_len,
            tos: net.tos,
            total_len: net.total_len,
            ip_flags: net.flags,
            ttl: net.ttl,
            l4: l4.l4,
            payload: l4.payload,
        },
        wire_len: orig_len,
        captured_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
        l4_truncated: l4.truncated,
        first_fragment: net.first_fragment,
        ipv6_ext_headers: net.ext_headers,
        vlan_tagged: link.vlan_tagged,
    })
}

/// [`decode`] for a frame from [`crate::capture::CaptureReader`].
#[inline]
pub fn decode_frame(frame: &Frame<'_>) -> Result<DecodedPacket, SkipReason> {
    decode(frame.linktype, frame.data, frame.ts_ns, frame.orig_len)
}

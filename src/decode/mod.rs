//! Link layer -> IP -> transport decoding: turns one captured frame into the flow key parts
//! and the [`PacketFields`] the tokenizer needs, or a counted [`SkipReason`].
//!
//! Link headers (`link`) and transport headers (`transport`) are fixed offsets read here;
//! the IP layer (`ip`: IPv4 options, IPv6 extension chains, fragments) is parsed with
//! etherparse. Fields are filled exactly as netFound's stage 3 writes them (see
//! `../shared/conformance/netfound/README.md`, "Field layout"); `tests/oracle_parity.rs`
//! checks them against tshark and against netFound's own stage-3 records.
//!
//! Decisions that shape what flows see:
//! - A non-first IP fragment is skipped ([`SkipReason::IpFragment`]); a first fragment is
//!   decoded and marked `first_fragment` (netFound mode drops it, native mode keeps it).
//! - A transport header cut by the snaplen keeps what is present (missing fields are zero,
//!   the payload is all zero) and is marked `l4_truncated`; without even the ports (TCP/UDP)
//!   or the type and code (ICMP) it is [`SkipReason::TruncatedTransport`].
//! - An IPv4 total length below the header length is [`SkipReason::MalformedIp`]; a link
//!   type's IP version must match the version nibble (raw IP, LINKTYPE 101, takes either).
//! - The 12 payload bytes of an ICMP echo start 16 bytes into the message: PcapPlusPlus's
//!   echo header includes an 8-byte timestamp (netFound's golden records confirm it). Other
//!   ICMP messages give their first 12 bytes, type byte included. ICMPv6 follows the same
//!   rules (netFound itself drops ICMPv6).
//! - 802.3 frames with LLC/SNAP encapsulation are followed to IP (as tshark does; netFound's
//!   filter drops them), and any number of 802.1Q/802.1ad/0x9100 tags is skipped.
//! - [`DecodeOptions`] picks the rules. netFound mode ([`DecodeOptions::NETFOUND`]) decodes
//!   exactly the link layers above and no tunnels: netFound's golden outputs were made so.
//!   Native mode also decodes the PPP and Cisco HDLC link types, PPPoE sessions, MPLS label
//!   stacks and NSH (`link`), and with [`TunnelMode::Inner`] (the default) strips tunnels
//!   (`tunnel`: IP-in-IP, GRE, ERSPAN, VXLAN, VXLAN-GPE, Geneve, GTP-U, Teredo, MPLS over
//!   UDP, CAPWAP) so the packet is keyed and tokenized by its innermost IP packet; the
//!   outermost addresses and tunnel id stay in [`DecodedPacket::tunnel`]. A packet with no
//!   tunnel pays one protocol compare (and, for UDP, a port range check) for it.
//!
//! This module never panics on any input, never allocates, and never looks at anything
//! beyond one frame (no state between packets).

mod ip;
mod link;
mod transport;
mod tunnel;

pub use tunnel::{TunnelInfo, TunnelKind, MAX_TUNNEL_DEPTH};

use crate::capture::Frame;
use netfm_tokenizer::{L4Fields, PacketFields, PAYLOAD_BYTES};
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
    /// PPP, with or without HDLC-like address/control bytes (native mode only).
    pub const PPP: u32 = 9;
    /// PPP in HDLC-like framing (native mode only).
    pub const PPP_HDLC: u32 = 50;
    /// Cisco HDLC (native mode only).
    pub const C_HDLC: u32 = 104;
}

/// What to do with tunnels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TunnelMode {
    /// Native mode: strip tunnels, key and tokenize by the innermost IP packet.
    #[default]
    Inner,
    /// Native mode: leave tunnels alone (a VXLAN packet is a UDP packet to port 4789).
    Outer,
    /// netFound mode: netFound's rules, no tunnels and none of native mode's extra link
    /// layers (use [`DecodeOptions::NETFOUND`]).
    Netfound,
}

/// How frames are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    pub tunnels: TunnelMode,
}

impl DecodeOptions {
    /// Native mode, tunnels stripped (the default).
    pub const INNER: DecodeOptions = DecodeOptions {
        tunnels: TunnelMode::Inner,
    };
    /// Native mode, tunnels left alone.
    pub const OUTER: DecodeOptions = DecodeOptions {
        tunnels: TunnelMode::Outer,
    };
    /// netFound mode: exactly the rules netFound's golden outputs were made with.
    pub const NETFOUND: DecodeOptions = DecodeOptions {
        tunnels: TunnelMode::Netfound,
    };

    fn links(&self) -> link::Links {
        match self.tunnels {
            TunnelMode::Netfound => link::Links::Netfound,
            TunnelMode::Inner | TunnelMode::Outer => link::Links::Native,
        }
    }
}

/// What the decoder makes of an ICMP/ICMPv6 packet beyond its type and code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    /// Echo request/reply: identifier.
    Echo { identifier: u16, request: bool },
    /// Error (dest unreachable, time exceeded, ...) quoting the offending packet's header:
    /// the quoted packet's addresses, protocol and ports (ports 0 when not present).
    Error {
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        src_port: u16,
        dst_port: u16,
    },
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
    /// The frame (or an Ethernet frame inside a tunnel) carried 802.1Q/802.1ad tags.
    pub vlan_tagged: bool,
    /// The tunnels stripped to reach this packet ([`TunnelInfo::NONE`] if none).
    pub tunnel: TunnelInfo,
}

impl DecodedPacket {
    /// A placeholder (all zero, IPv4 unspecified addresses, UDP): the value slots of a
    /// packet batch hold before [`decode_into`] fills them.
    pub const EMPTY: DecodedPacket = DecodedPacket {
        ts_ns: 0,
        src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        protocol: 0,
        src_port: 0,
        dst_port: 0,
        icmp: None,
        fields: PacketFields {
            ip_header_len: 0,
            tos: 0,
            total_len: 0,
            ip_flags: 0,
            ttl: 0,
            l4: L4Fields::Udp { length: 0 },
            payload: [0; PAYLOAD_BYTES],
        },
        wire_len: 0,
        captured_len: 0,
        l4_truncated: false,
        first_fragment: false,
        ipv6_ext_headers: false,
        vlan_tagged: false,
        tunnel: TunnelInfo::NONE,
    };
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
    /// The transport header is too short even for the ports (TCP/UDP) or the type and code
    /// (ICMP). A header cut later decodes with `l4_truncated` set; netFound mode drops those.
    TruncatedTransport,
    /// The transport header is malformed (e.g. TCP data offset < 5).
    MalformedTransport,
    /// A GRE or ERSPAN header is cut short or inconsistent (native mode, tunnels inner).
    MalformedTunnel,
    /// More than [`MAX_TUNNEL_DEPTH`] nested tunnels.
    TunnelTooDeep,
}

impl SkipReason {
    pub const ALL: [SkipReason; 11] = [
        SkipReason::UnsupportedLinkType,
        SkipReason::TruncatedLinkHeader,
        SkipReason::NotIp,
        SkipReason::MalformedIp,
        SkipReason::TruncatedIp,
        SkipReason::IpFragment,
        SkipReason::UnsupportedTransport,
        SkipReason::TruncatedTransport,
        SkipReason::MalformedTransport,
        SkipReason::MalformedTunnel,
        SkipReason::TunnelTooDeep,
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
            SkipReason::MalformedTunnel => "malformed_tunnel",
            SkipReason::TunnelTooDeep => "tunnel_too_deep",
        }
    }
}

/// Decodes one frame of link type `linktype` (a LINKTYPE_* number) captured at `ts_ns`
/// with on-the-wire length `orig_len`.
pub fn decode(
    linktype: u32,
    data: &[u8],
    ts_ns: u64,
    orig_len: u32,
    opts: &DecodeOptions,
) -> Result<DecodedPacket, SkipReason> {
    let mut p = DecodedPacket::EMPTY;
    decode_into(linktype, data, ts_ns, orig_len, opts, &mut p)?;
    Ok(p)
}

/// [`decode`] writing the packet into `out` (left unspecified on error): the pipeline's
/// reader decodes straight into its batch this way, instead of copying each ~200-byte
/// packet from a return value into it.
#[inline]
pub fn decode_into(
    linktype: u32,
    data: &[u8],
    ts_ns: u64,
    orig_len: u32,
    opts: &DecodeOptions,
    out: &mut DecodedPacket,
) -> Result<(), SkipReason> {
    let link = link::strip(linktype, data, opts.links())?;
    let net = ip::parse(link.ip, link.version)?;
    let inner = opts.tunnels == TunnelMode::Inner;
    let found = match net.protocol {
        tunnel::PROTO_IPIP | tunnel::PROTO_IPV6 | tunnel::PROTO_GRE if inner => {
            tunnel::ip_carried(&net)?
        }
        protocol => {
            let l4 = transport::parse(protocol, net.payload)?;
            let udp_tunnel = if inner
                && protocol == transport::PROTO_UDP
                && (tunnel::is_tunnel_port(l4.dst_port) || tunnel::is_tunnel_port(l4.src_port))
            {
                tunnel::udp_carried(&net, &l4)
            } else {
                None
            };
            match udp_tunnel {
                Some(found) => found?,
                None => {
                    let vlan_tagged = link.vlan_tagged;
                    fill(
                        out,
                        &net,
                        &l4,
                        vlan_tagged,
                        TunnelInfo::NONE,
                        ts_ns,
                        data,
                        orig_len,
                    );
                    return Ok(());
                }
            }
        }
    };
    let vlan_tagged = link.vlan_tagged | found.vlan_tagged;
    fill(
        out,
        &found.net,
        &found.l4,
        vlan_tagged,
        found.tunnel,
        ts_ns,
        data,
        orig_len,
    );
    Ok(())
}

/// Writes one decoded packet.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill(
    out: &mut DecodedPacket,
    net: &ip::IpLayer<'_>,
    l4: &transport::Transport,
    vlan_tagged: bool,
    tunnel: TunnelInfo,
    ts_ns: u64,
    data: &[u8],
    orig_len: u32,
) {
    *out = DecodedPacket {
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
        vlan_tagged,
        tunnel,
    };
}

/// [`decode`] for a frame from [`crate::capture::CaptureReader`].
#[inline]
pub fn decode_frame(frame: &Frame<'_>, opts: &DecodeOptions) -> Result<DecodedPacket, SkipReason> {
    decode(
        frame.linktype,
        frame.data,
        frame.ts_ns,
        frame.orig_len,
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netfm_tokenizer::L4Fields;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Decodes in every mode: a frame without tunnels decodes the same in all of them.
    fn decode(lt: u32, data: &[u8], ts: u64, orig: u32) -> Result<DecodedPacket, SkipReason> {
        let netfound = super::decode(lt, data, ts, orig, &DecodeOptions::NETFOUND);
        for opts in [DecodeOptions::INNER, DecodeOptions::OUTER] {
            assert_eq!(super::decode(lt, data, ts, orig, &opts), netfound);
        }
        netfound
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
    }

    fn opts(bytes: &[u8]) -> [u8; 40] {
        let mut o = [0u8; 40];
        o[..bytes.len()].copy_from_slice(bytes);
        o
    }

    // zeek http/get.pcap frame 1: Ethernet, IPv4, TCP SYN with options.
    const HTTP_GET_SYN: [u8; 78] = [
        0x00, 0x10, 0xdb, 0x88, 0xd2, 0xef, 0xc8, 0xbc, 0xc8, 0x96, 0xd2, 0xa0, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x40, 0xdf, 0x8e, 0x40, 0x00, 0x40, 0x06, 0x6d, 0xd3, 0x8d, 0x8e, 0xe4, 0x05,
        0xc0, 0x96, 0xbb, 0x2b, 0xe9, 0xd0, 0x00, 0x50, 0xfe, 0x21, 0x32, 0x3a, 0x00, 0x00, 0x00,
        0x00, 0xb0, 0x02, 0xff, 0xff, 0x3b, 0xc0, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x03,
        0x03, 0x04, 0x01, 0x01, 0x08, 0x0a, 0x16, 0x4a, 0xdd, 0x20, 0x00, 0x00, 0x00, 0x00, 0x04,
        0x02, 0x00, 0x00,
    ];

    #[test]
    fn ethernet_ipv4_tcp_syn() {
        let p = decode(linktype::ETHERNET, &HTTP_GET_SYN, 7, 78).unwrap();
        assert_eq!(
            (p.src, p.dst),
            (v4(141, 142, 228, 5), v4(192, 150, 187, 43))
        );
        assert_eq!((p.protocol, p.src_port, p.dst_port), (6, 59856, 80));
        let f = p.fields;
        assert_eq!(
            (f.ip_header_len, f.tos, f.total_len, f.ip_flags, f.ttl),
            (20, 0, 64, 2, 64)
        );
        let options = opts(&[
            0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x04, 0x01, 0x01, 0x08, 0x0a, 0x16, 0x4a,
            0xdd, 0x20, 0x00, 0x00, 0x00, 0x00, 0x04, 0x02, 0x00, 0x00,
        ]);
        assert_eq!(
            f.l4,
            L4Fields::Tcp {
                flags: 0x02,
                window: 65535,
                seq: 0xfe21_323a,
                ack: 0,
                urgent: 0,
                options
            }
        );
        assert_eq!(f.payload, [0; 12]);
        assert_eq!((p.ts_ns, p.wire_len, p.captured_len), (7, 78, 78));
        assert!(
            !p.l4_truncated
                && !p.first_fragment
                && !p.ipv6_ext_headers
                && !p.vlan_tagged
                && p.icmp.is_none()
        );
    }

    // zeek http-qinq-0.pcap frame 1 (first 60 bytes): the same SYN behind two 802.1Q tags.
    #[test]
    fn qinq_tags_are_skipped() {
        let f: [u8; 60] = [
            0x00, 0x10, 0xdb, 0x88, 0xd2, 0xef, 0xc8, 0xbc, 0xc8, 0x96, 0xd2, 0xa0, 0x81, 0x00,
            0xb0, 0x00, 0x81, 0x00, 0xb0, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x40, 0xdf, 0x8e,
            0x40, 0x00, 0x40, 0x06, 0x6d, 0xd3, 0x8d, 0x8e, 0xe4, 0x05, 0xc0, 0x96, 0xbb, 0x2b,
            0xe9, 0xd0, 0x00, 0x50, 0xfe, 0x21, 0x32, 0x3a, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x02,
            0xff, 0xff, 0x3b, 0xc0,
        ];
        let p = decode(linktype::ETHERNET, &f, 0, 86).unwrap();
        assert!(p.vlan_tagged);
        assert_eq!((p.src_port, p.dst_port, p.fields.ttl), (59856, 80, 64));
        // The snaplen cut the header before its checksum: what is there is kept.
        assert!(p.l4_truncated);
        assert!(matches!(
            p.fields.l4,
            L4Fields::Tcp {
                flags: 0x02,
                window: 65535,
                seq: 0xfe21_323a,
                ..
            }
        ));
    }

    // tcpdump LINKTYPE_RAW_ipv6.pcap frame 1: raw IPv6, UDP DNS query.
    const RAW_IPV6_DNS: [u8; 77] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x25, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x26, 0x20, 0x00, 0xfe, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x30, 0x39, 0x00, 0x35, 0x00,
        0x25, 0x98, 0xb3, 0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x01,
        0x00, 0x01,
    ];

    #[test]
    fn raw_ipv6_udp() {
        for lt in [linktype::RAW, linktype::IPV6] {
            let p = decode(lt, &RAW_IPV6_DNS, 0, 77).unwrap();
            assert_eq!((p.src, p.dst), (v6("2001:db8::1"), v6("2620:fe::9")));
            assert_eq!((p.protocol, p.src_port, p.dst_port), (17, 12345, 53));
            let f = p.fields;
            assert_eq!(
                (f.ip_header_len, f.tos, f.total_len, f.ip_flags, f.ttl),
                (40, 0, 77, 0, 64)
            );
            assert_eq!(f.l4, L4Fields::Udp { length: 37 });
            assert_eq!(
                f.payload,
                [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
            );
        }
        // tcpdump LINKTYPE_IPV4_invalid.pcap carries these very bytes as LINKTYPE_IPV4.
        assert_eq!(
            decode(linktype::IPV4, &RAW_IPV6_DNS, 0, 77),
            Err(SkipReason::MalformedIp)
        );
    }

    // tcpdump RADIUS-RFC4675.pcap frame 1 (first 80 bytes): Linux SLL, IPv4, UDP.
    #[test]
    fn linux_sll_udp() {
        let f: [u8; 80] = [
            0x00, 0x00, 0x03, 0x04, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x08, 0x00, 0x45, 0x00, 0x00, 0x6c, 0x51, 0x54, 0x00, 0x00, 0x40, 0x11, 0x2b, 0x2b,
            0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0xd0, 0x56, 0x07, 0x14, 0x00, 0x58,
            0xfe, 0x6b, 0x01, 0x46, 0x00, 0x50, 0xf4, 0x47, 0x57, 0xbc, 0x49, 0x8c, 0x33, 0x93,
            0x76, 0x3a, 0x27, 0xd0, 0xb2, 0x39, 0x37, 0x02, 0x01, 0x0c, 0x62, 0x6f, 0x62, 0x2d,
            0x74, 0x61, 0x67, 0x67, 0x65, 0x64, 0x02, 0x12, 0xa3, 0x0e,
        ];
        let p = decode(linktype::LINUX_SLL, &f, 0, 124).unwrap();
        assert_eq!((p.src, p.dst), (v4(127, 0, 0, 1), v4(127, 0, 0, 1)));
        assert_eq!(
            (p.src_port, p.dst_port, p.fields.total_len),
            (53334, 1812, 108)
        );
        assert_eq!(p.fields.l4, L4Fields::Udp { length: 88 });
        assert_eq!(
            p.fields.payload,
            [0x01, 0x46, 0x00, 0x50, 0xf4, 0x47, 0x57, 0xbc, 0x49, 0x8c, 0x33, 0x93]
        );
        // The same packet behind an SLL2 header (protocol first, 20 bytes).
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        sll2.extend_from_slice(&f[16..]);
        assert_eq!(
            decode(linktype::LINUX_SLL2, &sll2, 0, 128).unwrap().fields,
            p.fields
        );
    }

    // zeek icmp-destunreach-udp.pcap frame 1 (first 70 bytes): port unreachable quoting DNS.
    #[test]
    fn icmp_error_quotes_the_udp_flow() {
        let f: [u8; 70] = [
            0x00, 0x19, 0xe3, 0xe7, 0x5d, 0x23, 0x00, 0x0b, 0xdb, 0x63, 0x58, 0xa6, 0x08, 0x00,
            0x45, 0x00, 0x00, 0xb0, 0x28, 0x1e, 0x00, 0x00, 0x80, 0x01, 0x8e, 0x77, 0xc0, 0xa8,
            0x01, 0x66, 0xc0, 0xa8, 0x01, 0x01, 0x03, 0x03, 0x03, 0xbb, 0x00, 0x00, 0x00, 0x00,
            0x45, 0x00, 0x00, 0xa3, 0x37, 0x11, 0x00, 0x00, 0x40, 0x11, 0xbf, 0x81, 0xc0, 0xa8,
            0x01, 0x01, 0xc0, 0xa8, 0x01, 0x66, 0x00, 0x35, 0xe7, 0x47, 0x00, 0x8f, 0x76, 0xd2,
        ];
        let p = decode(linktype::ETHERNET, &f, 0, 194).unwrap();
        assert_eq!(
            (p.src, p.dst, p.protocol, p.src_port, p.dst_port),
            (v4(192, 168, 1, 102), v4(192, 168, 1, 1), 1, 0, 0)
        );
        assert_eq!((p.fields.total_len, p.fields.ttl), (176, 128));
        assert_eq!(
            p.fields.l4,
            L4Fields::Icmp {
                icmp_type: 3,
                code: 3
            }
        );
        let quoted = IcmpKind::Error {
            src: v4(192, 168, 1, 1),
            dst: v4(192, 168, 1, 102),
            protocol: 17,
            src_port: 53,
            dst_port: 59207,
        };
        assert_eq!(p.icmp, Some(quoted));
        // netFound's golden record: the 12 bytes start at the ICMP type byte.
        assert_eq!(
            p.fields.payload,
            [0x03, 0x03, 0x03, 0xbb, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0xa3]
        );
    }

    // zeek icmp/5-pings.pcap frame 1: echo request.
    #[test]
    fn icmp_echo_payload_skips_the_timestamp() {
        let f: [u8; 98] = [
            0xa6, 0x83, 0xe7, 0x0c, 0x90, 0x64, 0x00, 0x0c, 0x29, 0xcf, 0x30, 0x15, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x54, 0x94, 0x6a, 0x40, 0x00, 0x40, 0x01, 0xbd, 0x04, 0xac, 0x10,
            0x85, 0x02, 0xac, 0xd9, 0x0b, 0x4e, 0x08, 0x00, 0xef, 0x24, 0x04, 0xca, 0x00, 0x01,
            0x8b, 0xcf, 0xcf, 0x5f, 0x00, 0x00, 0x00, 0x00, 0xdb, 0x0d, 0x0f, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b,
            0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
            0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
        ];
        let p = decode(linktype::ETHERNET, &f, 0, 98).unwrap();
        assert_eq!(
            p.icmp,
            Some(IcmpKind::Echo {
                identifier: 1226,
                request: true
            })
        );
        assert_eq!(
            p.fields.l4,
            L4Fields::Icmp {
                icmp_type: 8,
                code: 0
            }
        );
        // netFound's golden record for this packet.
        assert_eq!(
            p.fields.payload,
            [0xdb, 0x0d, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13]
        );
    }

    // zeek communityid/icmp6.pcap frame 23: ICMPv6 echo request with 8 bytes of data.
    #[test]
    fn icmpv6_echo() {
        let f: [u8; 70] = [
            0x00, 0x60, 0x97, 0x07, 0x69, 0xea, 0x00, 0x00, 0x86, 0x05, 0x80, 0xda, 0x86, 0xdd,
            0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0x40, 0x3f, 0xfe, 0x05, 0x07, 0x00, 0x00,
            0x00, 0x01, 0x02, 0x00, 0x86, 0xff, 0xfe, 0x05, 0x80, 0xda, 0x3f, 0xfe, 0x05, 0x01,
            0x00, 0x00, 0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00,
            0xa5, 0x72, 0x76, 0x20, 0x00, 0x00, 0x01, 0xc9, 0xe7, 0x36, 0xd3, 0x39, 0x06, 0x00,
        ];
        let p = decode(linktype::ETHERNET, &f, 0, 70).unwrap();
        assert_eq!(
            (p.src, p.dst),
            (
                v6("3ffe:507:0:1:200:86ff:fe05:80da"),
                v6("3ffe:501:0:1001::2")
            )
        );
        assert_eq!(p.protocol, 58);
        assert_eq!(
            p.icmp,
            Some(IcmpKind::Echo {
                identifier: 0x7620,
                request: true
            })
        );
        assert_eq!(
            p.fields.l4,
            L4Fields::Icmp {
                icmp_type: 128,
                code: 0
            }
        );
        assert_eq!((p.fields.total_len, p.fields.ttl), (56, 64));
        assert_eq!(p.fields.payload, [0; 12]);
    }

    // zeek tcp/truncated-header.pcap frame 1: a SYN whose options the 68-byte snaplen cut.
    const TRUNCATED_SYN: [u8; 68] = [
        0xea, 0xf6, 0x1c, 0x2d, 0x9f, 0xd2, 0x80, 0x0b, 0x98, 0x3b, 0xb9, 0xec, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x3c, 0x38, 0xe0, 0x40, 0x00, 0x33, 0x06, 0x0c, 0xe2, 0xc9, 0xba, 0x9d, 0x43,
        0x80, 0x03, 0x1a, 0xf9, 0xed, 0x9b, 0x00, 0x19, 0x3e, 0x17, 0x75, 0xde, 0x00, 0x00, 0x00,
        0x00, 0xa0, 0xc2, 0x16, 0xd0, 0x90, 0xd6, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02,
        0x08, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
    ];

    #[test]
    fn snaplen_cut_tcp_header_keeps_what_is_there() {
        let p = decode(linktype::ETHERNET, &TRUNCATED_SYN, 0, 74).unwrap();
        assert!(p.l4_truncated);
        assert_eq!(
            (p.src_port, p.dst_port, p.captured_len, p.wire_len),
            (60827, 25, 68, 74)
        );
        let options = opts(&[
            0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        ]);
        assert_eq!(
            p.fields.l4,
            L4Fields::Tcp {
                flags: 0xc2,
                window: 5840,
                seq: 0x3e17_75de,
                ack: 0,
                urgent: 0,
                options
            }
        );
        // Cut inside the acknowledgement number: the missing bytes read as zero.
        let p = decode(linktype::ETHERNET, &TRUNCATED_SYN[..14 + 20 + 10], 0, 74).unwrap();
        assert!(p.l4_truncated);
        assert!(matches!(
            p.fields.l4,
            L4Fields::Tcp {
                seq: 0x3e17_75de,
                ack: 0,
                flags: 0,
                window: 0,
                ..
            }
        ));
        // Not even the ports.
        assert_eq!(
            decode(linktype::ETHERNET, &TRUNCATED_SYN[..14 + 20 + 3], 0, 74),
            Err(SkipReason::TruncatedTransport)
        );
        // Cut inside the IP header.
        assert_eq!(
            decode(linktype::ETHERNET, &TRUNCATED_SYN[..14 + 19], 0, 74),
            Err(SkipReason::TruncatedIp)
        );
        // A data offset below 5 words is malformed.
        let mut bad = TRUNCATED_SYN;
        bad[14 + 20 + 12] = 0x40;
        assert_eq!(
            decode(linktype::ETHERNET, &bad, 0, 74),
            Err(SkipReason::MalformedTransport)
        );
    }

    // zeek ipv4/fragmented-1.pcap frames 1 and 2 (first 50 bytes of frame 2).
    #[test]
    fn ipv4_fragments() {
        let first: [u8; 60] = [
            0x00, 0x60, 0x97, 0x12, 0x2f, 0x58, 0x00, 0x20, 0xaf, 0xba, 0x78, 0x65, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x26, 0x00, 0xf2, 0x20, 0x00, 0x40, 0x11, 0x1a, 0xf2, 0xa4, 0x01,
            0x7b, 0xa3, 0xa4, 0x01, 0x7b, 0x3d, 0x00, 0x7b, 0x00, 0x89, 0x00, 0x12, 0xbf, 0xe2,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00,
        ];
        let p = decode(linktype::ETHERNET, &first, 0, 60).unwrap();
        assert!(p.first_fragment);
        assert_eq!((p.fields.ip_flags, p.src_port, p.dst_port), (1, 123, 137));
        assert_eq!(p.fields.l4, L4Fields::Udp { length: 18 });
        let later: [u8; 50] = [
            0x00, 0x60, 0x97, 0x12, 0x2f, 0x58, 0x00, 0x20, 0xaf, 0xba, 0x78, 0x65, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x88, 0x00, 0xf2, 0x00, 0x06, 0x40, 0x11, 0x3a, 0x8a, 0xa4, 0x01,
            0x7b, 0xa3, 0xa4, 0x01, 0x7b, 0x3d, 0x00, 0x7b, 0x00, 0x89, 0x00, 0x74, 0xbf, 0x1e,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            decode(linktype::ETHERNET, &later, 0, 150),
            Err(SkipReason::IpFragment)
        );
    }

    // zeek ipv6-fragmented-dns.pcap frames 6 and 7 (first 80 / 72 bytes).
    #[test]
    fn ipv6_fragments() {
        let first: [u8; 80] = [
            0xc4, 0x2c, 0x03, 0x3b, 0x6c, 0xaa, 0xd8, 0x30, 0x62, 0x48, 0xc5, 0xb5, 0x86, 0xdd,
            0x60, 0x00, 0x00, 0x00, 0x05, 0xa0, 0x2c, 0x35, 0x26, 0x07, 0xf7, 0x40, 0x00, 0x0b,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x93, 0x20, 0x01, 0x04, 0x70,
            0x1f, 0x11, 0x08, 0x1f, 0xd1, 0x38, 0x5f, 0x55, 0x06, 0xd4, 0x1f, 0xe2, 0x11, 0x00,
            0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x35, 0xca, 0x8b, 0x0c, 0xa6, 0x68, 0x8f,
            0x9f, 0x91, 0x85, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x01,
        ];
        let p = decode(linktype::ETHERNET, &first, 0, 1494).unwrap();
        assert!(p.first_fragment && p.ipv6_ext_headers);
        assert_eq!(
            (p.protocol, p.src_port, p.dst_port, p.fields.total_len),
            (17, 53, 51851, 1480)
        );
        assert_eq!(p.fields.l4, L4Fields::Udp { length: 3238 });
        let mut later = first;
        later[56..58].copy_from_slice(&[0x05, 0x99]); // fragment offset 179 (1432 bytes), M set
        assert_eq!(
            decode(linktype::ETHERNET, &later, 0, 1494),
            Err(SkipReason::IpFragment)
        );
    }

    // zeek ip-bogus-header-len.pcap: IPv4 total length 0, below the header length.
    #[test]
    fn malformed_ip_is_skipped() {
        let f: [u8; 60] = [
            0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
            0x45, 0x03, 0x00, 0x00, 0x25, 0x2c, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x76, 0xb5,
            0x90, 0xc2, 0x88, 0xff, 0x73, 0x74, 0x61, 0x74, 0x65, 0xff, 0x00, 0x00, 0x00, 0xff,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            decode(linktype::ETHERNET, &f, 0, 60),
            Err(SkipReason::MalformedIp)
        );
        let mut ihl4 = HTTP_GET_SYN;
        ihl4[14] = 0x44;
        assert_eq!(
            decode(linktype::ETHERNET, &ihl4, 0, 78),
            Err(SkipReason::MalformedIp)
        );
        let mut sctp = HTTP_GET_SYN;
        sctp[14 + 9] = 132;
        assert_eq!(
            decode(linktype::ETHERNET, &sctp, 0, 78),
            Err(SkipReason::UnsupportedTransport)
        );
        assert_eq!(
            decode(linktype::ETHERNET, &HTTP_GET_SYN[..14], 0, 78),
            Err(SkipReason::TruncatedIp)
        );
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        // The first fragment above carries 10 bytes of UDP payload in a 60-byte frame whose
        // padding must not leak into the payload tokens.
        let mut f = [0xeeu8; 60];
        f[..14 + 38].copy_from_slice(&{
            let mut b = [0u8; 52];
            b[12..14].copy_from_slice(&[0x08, 0x00]);
            b[14..34].copy_from_slice(&[
                0x45, 0x00, 0x00, 0x26, 0x00, 0xf2, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0,
                1, 10, 0, 0, 2,
            ]);
            b[34..42].copy_from_slice(&[0, 53, 0, 53, 0, 18, 0, 0]);
            b[42..52].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
            b
        });
        let p = decode(linktype::ETHERNET, &f, 0, 60).unwrap();
        assert_eq!(p.fields.payload, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0]);
    }

    #[test]
    fn ipv4_options_and_bsd_loopback() {
        // BSD loopback (AF_INET, host order), IPv4 with a router-alert option (IHL 6), UDP.
        let f = [
            2, 0, 0, 0, 0x46, 0x10, 0x00, 0x24, 0x12, 0x34, 0x40, 0x00, 0x01, 0x11, 0x00, 0x00,
            127, 0, 0, 1, 127, 0, 0, 2, 0x94, 0x04, 0x00, 0x00, 0x13, 0x88, 0x13, 0x89, 0x00, 0x0c,
            0x00, 0x00, b'p', b'i', b'n', b'g',
        ];
        let p = decode(linktype::NULL, &f, 0, 40).unwrap();
        let fl = p.fields;
        assert_eq!(
            (fl.ip_header_len, fl.tos, fl.total_len, fl.ip_flags, fl.ttl),
            (24, 0x10, 36, 2, 1)
        );
        assert_eq!((p.src, p.dst), (v4(127, 0, 0, 1), v4(127, 0, 0, 2)));
        assert_eq!((p.src_port, p.dst_port), (5000, 5001));
        assert_eq!(fl.l4, L4Fields::Udp { length: 12 });
        assert_eq!(fl.payload, [b'p', b'i', b'n', b'g', 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn every_prefix_of_real_frames_decodes_without_panic() {
        let frames: [&[u8]; 3] = [&HTTP_GET_SYN, &RAW_IPV6_DNS, &TRUNCATED_SYN];
        for frame in frames {
            for lt in [0, 1, 101, 108, 113, 228, 229, 276, 9999] {
                for n in 0..=frame.len() {
                    let _ = decode(lt, &frame[..n], 0, frame.len() as u32);
                }
            }
        }
    }
}

//! Tunnels: IP-in-IP, GRE (and ERSPAN I/II/III, PPP, WCCP and Cisco MetaData over it) and
//! the UDP tunnels (VXLAN, VXLAN-GPE, Geneve, GTP-U, Teredo, MPLS over UDP, CAPWAP data),
//! stripped so that a packet is keyed and tokenized by its innermost IP packet.
//!
//! Each header is a few fixed offsets named once in a `field` module. What a tunnel carries
//! is handed back as an [`Inner`]: an ether type and its bytes (Ethernet frames, PPP, MPLS,
//! NSH go through [`super::link::by_ether_type`]), or an IP packet.
//!
//! Decisions:
//! - At most [`MAX_TUNNEL_DEPTH`] nested tunnels are stripped; a packet with more is
//!   [`SkipReason::TunnelTooDeep`].
//! - IP-carried tunnels (IP-in-IP, GRE) have no transport netfm tokenizes without them: if
//!   what they carry does not decode, the packet is skipped with the inner reason (as today,
//!   a GRE packet of a protocol type not decoded here is [`SkipReason::UnsupportedTransport`]).
//! - A UDP tunnel is recognised by its port (destination first, then source) and a header
//!   that is consistent (flags, version, lengths); if the header is not, or what it carries
//!   does not decode to a transport netfm tokenizes, the packet stays the ordinary UDP packet
//!   it is on the wire (nDPI's `gtp_false_positive` capture is that case). Only
//!   [`SkipReason::TunnelTooDeep`] is never turned back into the outer packet.
//!
//! Like the rest of `decode`, this never panics, never allocates and keeps no state.

use super::ip::{self, IpLayer};
use super::link::{self, ether_type, IpVersion, Links};
use super::transport::{self, Transport, PROTO_UDP};
use super::SkipReason;
use netfm_tokenizer::L4Fields;
use std::net::{IpAddr, Ipv4Addr};

/// Most nested tunnels stripped from one packet (link layers such as VLAN tags, MPLS or
/// PPPoE do not count).
pub const MAX_TUNNEL_DEPTH: u8 = 4;

/// The outermost tunnel a packet came through.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    /// Not tunnelled.
    None = 0,
    /// IPv4 or IPv6 directly in IPv4 or IPv6 (IP protocols 4 and 41; 6in4, 4in6, ...).
    Ipip = 1,
    /// GRE (RFC 2784/2890, and PPTP's enhanced GRE carrying PPP).
    Gre = 2,
    /// ERSPAN type I, II or III over GRE.
    Erspan = 3,
    /// VXLAN (UDP 4789, and Linux's 8472).
    Vxlan = 4,
    /// VXLAN-GPE (UDP 4790), typically carrying NSH.
    VxlanGpe = 5,
    /// Geneve (UDP 6081).
    Geneve = 6,
    /// GTP-U (UDP 2152).
    Gtpu = 7,
    /// Teredo (UDP 3544).
    Teredo = 8,
    /// MPLS over UDP (UDP 6635).
    MplsUdp = 9,
    /// CAPWAP data channel (UDP 5247).
    Capwap = 10,
}

impl TunnelKind {
    pub const ALL: [TunnelKind; 11] = [
        TunnelKind::None,
        TunnelKind::Ipip,
        TunnelKind::Gre,
        TunnelKind::Erspan,
        TunnelKind::Vxlan,
        TunnelKind::VxlanGpe,
        TunnelKind::Geneve,
        TunnelKind::Gtpu,
        TunnelKind::Teredo,
        TunnelKind::MplsUdp,
        TunnelKind::Capwap,
    ];

    /// Stable snake_case name ("none" when not tunnelled).
    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::None => "none",
            TunnelKind::Ipip => "ipip",
            TunnelKind::Gre => "gre",
            TunnelKind::Erspan => "erspan",
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::VxlanGpe => "vxlan_gpe",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Gtpu => "gtpu",
            TunnelKind::Teredo => "teredo",
            TunnelKind::MplsUdp => "mpls_udp",
            TunnelKind::Capwap => "capwap",
        }
    }
}

/// What tunnels a decoded packet was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelInfo {
    /// Tunnels stripped (0: not tunnelled).
    pub depth: u8,
    /// The outermost tunnel.
    pub kind: TunnelKind,
    /// The outermost IP header's addresses (unspecified IPv4 when `depth` is 0).
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// The outermost tunnel's id: VXLAN/VXLAN-GPE/Geneve VNI, GRE key (PPTP: call id),
    /// GTP-U TEID, ERSPAN II/III session id, MPLS-over-UDP top label; `None` when that
    /// tunnel has none.
    pub id: Option<u32>,
}

impl TunnelInfo {
    pub const NONE: TunnelInfo = TunnelInfo {
        depth: 0,
        kind: TunnelKind::None,
        outer_src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        outer_dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        id: None,
    };
}

/// What a tunnel header says it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Inner<'a> {
    /// Bytes of this ether type (an Ethernet frame is [`ether_type::TRANSPARENT_ETHERNET`]).
    Ether(u16, &'a [u8]),
    /// An IP packet.
    Ip(&'a [u8], IpVersion),
}

/// One tunnel header, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Encap<'a> {
    pub kind: TunnelKind,
    pub id: Option<u32>,
    pub inner: Inner<'a>,
}

/// The innermost packet: its IP layer and transport, and what it was found in.
pub(super) struct Innermost<'a> {
    pub net: IpLayer<'a>,
    pub l4: Transport,
    pub tunnel: TunnelInfo,
    /// An inner Ethernet frame carried VLAN tags.
    pub vlan_tagged: bool,
}

pub(super) const PROTO_IPIP: u8 = 4;
pub(super) const PROTO_IPV6: u8 = 41;
pub(super) const PROTO_GRE: u8 = 47;

/// UDP ports of the tunnels decoded here.
pub(super) mod udp_port {
    pub const GTP_U: u16 = 2152;
    pub const TEREDO: u16 = 3544;
    pub const VXLAN: u16 = 4789;
    pub const VXLAN_GPE: u16 = 4790;
    pub const CAPWAP_DATA: u16 = 5247;
    pub const GENEVE: u16 = 6081;
    pub const MPLS: u16 = 6635;
    /// Linux's VXLAN port before IANA assigned 4789.
    pub const VXLAN_LINUX: u16 = 8472;
}

/// Header layouts, as byte ranges.
mod field {
    pub type Field = core::ops::Range<usize>;

    /// GRE (RFC 2784, keys and sequence numbers RFC 2890, PPTP's version 1 RFC 2637).
    pub mod gre {
        pub const FLAGS: usize = 0;
        pub const VERSION: usize = 1;
        pub const PROTOCOL: super::Field = 2..4;
        pub const LEN: usize = 4;
        /// Each optional word (checksum+reserved, key, sequence, PPTP ack) is 4 bytes.
        pub const WORD: usize = 4;
        pub const CHECKSUM: u8 = 0x80;
        pub const ROUTING: u8 = 0x40;
        pub const KEY: u8 = 0x20;
        pub const SEQUENCE: u8 = 0x10;
        /// In the version byte: PPTP's acknowledgment number is present.
        pub const ACK: u8 = 0x80;
        pub const VERSION_MASK: u8 = 0x07;
    }
    /// ERSPAN type II header (after GRE with a sequence number).
    pub mod erspan2 {
        /// High nibble: version, 1.
        pub const VERSION: usize = 0;
        /// Low 10 bits: session id.
        pub const SESSION: super::Field = 2..4;
        pub const LEN: usize = 8;
    }
    /// ERSPAN type III header.
    pub mod erspan3 {
        /// High nibble: version, 2.
        pub const VERSION: usize = 0;
        pub const SESSION: super::Field = 2..4;
        /// P(1) FT(5) HW ID(6) D(1) Gra(2) O(1).
        pub const FLAGS: super::Field = 10..12;
        pub const LEN: usize = 12;
        /// Platform-specific subheader present when O is set.
        pub const PLATFORM_LEN: usize = 8;
        pub const FRAME_ETHERNET: u16 = 0;
        pub const FRAME_IP: u16 = 2;
    }
    /// Cisco MetaData inside GRE: ether type, version, length (4-byte words), options.
    pub mod cisco_metadata {
        pub const ETHER_TYPE: super::Field = 0..2;
        pub const LENGTH: usize = 3;
        pub const LEN: usize = 4;
    }
    /// WCCP v2 redirect header inside GRE.
    pub mod wccp {
        pub const LEN: usize = 4;
    }
    /// VXLAN (RFC 7348).
    pub mod vxlan {
        pub const FLAGS: usize = 0;
        pub const VNI: super::Field = 4..7;
        pub const LEN: usize = 8;
        /// The VNI is valid.
        pub const FLAG_I: u8 = 0x08;
        /// Bits that must be zero (the group-policy extension uses 0x80).
        pub const RESERVED: u8 = 0x77;
    }
    /// VXLAN-GPE (draft-ietf-nvo3-vxlan-gpe).
    pub mod vxlan_gpe {
        pub const FLAGS: usize = 0;
        pub const NEXT_PROTOCOL: usize = 3;
        pub const VNI: super::Field = 4..7;
        pub const LEN: usize = 8;
        pub const FLAG_P: u8 = 0x04;
        pub const VERSION: u8 = 0x30;
    }
    /// Geneve (RFC 8926).
    pub mod geneve {
        /// Version (2 bits), options length in 4-byte words (6 bits).
        pub const VER_OPT_LEN: usize = 0;
        pub const PROTOCOL: super::Field = 2..4;
        pub const VNI: super::Field = 4..7;
        pub const LEN: usize = 8;
    }
    /// GTP-U version 1 (3GPP TS 29.281).
    pub mod gtpu {
        /// Version (3 bits), PT, reserved, E, S, PN.
        pub const FLAGS: usize = 0;
        pub const MESSAGE_TYPE: usize = 1;
        /// Bytes after the mandatory 8-byte header.
        pub const LENGTH: super::Field = 2..4;
        pub const TEID: super::Field = 4..8;
        pub const LEN: usize = 8;
        /// Sequence number, N-PDU number and next extension type, present with E, S or PN.
        pub const OPTIONAL_LEN: usize = 4;
        pub const NEXT_EXTENSION: usize = 11;
        pub const G_PDU: u8 = 0xff;
    }
    /// Teredo (RFC 4380) indicators before the IPv6 packet.
    pub mod teredo {
        pub const AUTH: [u8; 2] = [0x00, 0x01];
        pub const AUTH_ID_LEN: usize = 2;
        pub const AUTH_AU_LEN: usize = 3;
        /// Indicator, lengths, nonce (8) and confirmation (1), before the id and value.
        pub const AUTH_FIXED_LEN: usize = 13;
        pub const ORIGIN: [u8; 2] = [0x00, 0x00];
        pub const ORIGIN_LEN: usize = 8;
    }
    /// CAPWAP header (RFC 5415 section 4.3).
    pub mod capwap {
        /// Version (4 bits) and type (4 bits): 0 is a plain CAPWAP header, 1 DTLS.
        pub const PREAMBLE: usize = 0;
        /// HLEN (5 bits, 4-byte words), RID (5), WBID (5), T, F, L, W, M, K, flags (3).
        pub const HLEN_RID_WBID_T: super::Field = 1..3;
        pub const FLAGS: usize = 3;
        pub const FRAGMENT_OFFSET: super::Field = 6..8;
        pub const LEN: usize = 8;
        pub const FLAG_F: u8 = 0x80;
        pub const FLAG_K: u8 = 0x08;
        pub const WBID_IEEE80211: u16 = 1;
    }
    /// IEEE 802.11 data frame header.
    pub mod ieee80211 {
        pub const FRAME_CONTROL: super::Field = 0..2;
        pub const LEN: usize = 24;
        pub const ADDR4_LEN: usize = 6;
        pub const QOS_LEN: usize = 2;
        pub const HT_CONTROL_LEN: usize = 4;
    }
}

fn be16(data: &[u8], at: field::Field) -> Option<u16> {
    let b = data.get(at)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn be24(data: &[u8], at: field::Field) -> Option<u32> {
    let b = data.get(at)?;
    Some(u32::from_be_bytes([0, b[0], b[1], b[2]]))
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Strips the tunnel an IP-carried packet (protocol 4, 41 or 47) is, and returns its
/// innermost packet. Kept out of line: the common, untunnelled path stays small.
#[inline(never)]
pub(super) fn ip_carried<'a>(outer: &IpLayer<'a>) -> Result<Innermost<'a>, SkipReason> {
    descend_ip_carried(outer, 0, TunnelInfo::NONE)
}

/// Strips a UDP tunnel, if the UDP packet `outer` (whose transport is `l4`) is one;
/// `None` when it is not (or what it carries does not decode): it stays ordinary UDP.
#[inline(never)]
pub(super) fn udp_carried<'a>(
    outer: &IpLayer<'a>,
    l4: &Transport,
) -> Option<Result<Innermost<'a>, SkipReason>> {
    descend_udp(outer, l4, 0, TunnelInfo::NONE)
}

/// Whether a UDP port is a tunnel's: one compare for most ports.
#[inline]
pub(super) fn is_tunnel_port(port: u16) -> bool {
    use udp_port::*;
    (GTP_U..=VXLAN_LINUX).contains(&port)
        && matches!(
            port,
            GTP_U | TEREDO | VXLAN | VXLAN_GPE | CAPWAP_DATA | GENEVE | MPLS | VXLAN_LINUX
        )
}

fn descend_ip_carried<'a>(
    outer: &IpLayer<'a>,
    depth: u8,
    info: TunnelInfo,
) -> Result<Innermost<'a>, SkipReason> {
    let encap = match outer.protocol {
        PROTO_IPIP => Encap {
            kind: TunnelKind::Ipip,
            id: None,
            inner: Inner::Ip(outer.payload, IpVersion::V4),
        },
        PROTO_IPV6 => Encap {
            kind: TunnelKind::Ipip,
            id: None,
            inner: Inner::Ip(outer.payload, IpVersion::V6),
        },
        _ => gre(outer.payload)?,
    };
    enter(outer, encap, depth, info)
}

fn descend_udp<'a>(
    outer: &IpLayer<'a>,
    l4: &Transport,
    depth: u8,
    info: TunnelInfo,
) -> Option<Result<Innermost<'a>, SkipReason>> {
    let L4Fields::Udp { length } = l4.l4 else {
        return None;
    };
    let payload = outer.payload.get(8..).unwrap_or_default();
    // The UDP length bounds the payload when it is sane (segmentation offload can leave it
    // 0 or stale); the captured bytes bound it always.
    let declared = usize::from(length).checked_sub(8);
    let payload = match declared {
        Some(n) if n <= payload.len() => &payload[..n],
        _ => payload,
    };
    for port in [l4.dst_port, l4.src_port] {
        if !is_tunnel_port(port) {
            continue;
        }
        let Some(encap) = udp_tunnel(port, payload, declared) else {
            continue;
        };
        return match enter(outer, encap, depth, info) {
            Ok(inner) => Some(Ok(inner)),
            Err(SkipReason::TunnelTooDeep) => Some(Err(SkipReason::TunnelTooDeep)),
            Err(_) => None,
        };
    }
    None
}

/// Decodes what a tunnel carries, down to the innermost packet.
fn enter<'a>(
    outer: &IpLayer<'a>,
    encap: Encap<'a>,
    depth: u8,
    info: TunnelInfo,
) -> Result<Innermost<'a>, SkipReason> {
    if depth >= MAX_TUNNEL_DEPTH {
        return Err(SkipReason::TunnelTooDeep);
    }
    let info = if depth == 0 {
        TunnelInfo {
            depth: 1,
            kind: encap.kind,
            outer_src: outer.src,
            outer_dst: outer.dst,
            id: encap.id,
        }
    } else {
        TunnelInfo {
            depth: depth + 1,
            ..info
        }
    };
    let (bytes, version, vlan_tagged) = match encap.inner {
        Inner::Ip(bytes, version) => (bytes, version, false),
        Inner::Ether(ether, bytes) => {
            let l = link::by_ether_type(ether, bytes, Links::Native)?;
            (l.ip, l.version, l.vlan_tagged)
        }
    };
    let mut net = ip::parse(bytes, version)?;
    // Part of a fragmented outer datagram: the inner packet is too.
    net.first_fragment |= outer.first_fragment;
    let mut inner = match net.protocol {
        PROTO_IPIP | PROTO_IPV6 | PROTO_GRE => descend_ip_carried(&net, depth + 1, info)?,
        protocol => {
            let l4 = transport::parse(protocol, net.payload)?;
            let nested = if protocol == PROTO_UDP {
                descend_udp(&net, &l4, depth + 1, info)
            } else {
                None
            };
            match nested {
                Some(r) => r?,
                None => Innermost {
                    net,
                    l4,
                    tunnel: info,
                    vlan_tagged: false,
                },
            }
        }
    };
    inner.vlan_tagged |= vlan_tagged;
    Ok(inner)
}

/// GRE and what it carries. A protocol type not decoded here is
/// [`SkipReason::UnsupportedTransport`], as a GRE packet always was.
fn gre(data: &[u8]) -> Result<Encap<'_>, SkipReason> {
    use field::gre::*;
    let h = data.get(..LEN).ok_or(SkipReason::MalformedTunnel)?;
    let (flags, version) = (h[FLAGS], h[VERSION] & VERSION_MASK);
    let protocol = u16::from_be_bytes([h[PROTOCOL.start], h[PROTOCOL.start + 1]]);
    if flags & ROUTING != 0 {
        // RFC 1701 source routing: obsolete, a variable list this decoder does not walk.
        return Err(SkipReason::UnsupportedTransport);
    }
    let mut at = LEN;
    let mut id = None;
    match version {
        0 => {
            if flags & CHECKSUM != 0 {
                at += WORD;
            }
            if flags & KEY != 0 {
                id = Some(be32(data, at).ok_or(SkipReason::MalformedTunnel)?);
                at += WORD;
            }
        }
        1 => {
            // PPTP: the key holds the payload length and the call id, and is mandatory.
            if flags & KEY == 0 || protocol != ether_type::PPP {
                return Err(SkipReason::MalformedTunnel);
            }
            id = Some(be32(data, at).ok_or(SkipReason::MalformedTunnel)? & 0xffff);
            at += WORD;
            if h[VERSION] & ACK != 0 {
                at += WORD;
            }
        }
        _ => return Err(SkipReason::UnsupportedTransport),
    }
    if flags & SEQUENCE != 0 {
        at += WORD;
    }
    let rest = data.get(at..).ok_or(SkipReason::MalformedTunnel)?;
    let (kind, inner) = match protocol {
        ether_type::ERSPAN_I_II => {
            if flags & SEQUENCE == 0 {
                // Type I: no ERSPAN header, the mirrored frame follows GRE directly.
                (TunnelKind::Erspan, rest)
            } else {
                let (session, frame) = erspan2(rest)?;
                id = Some(session);
                (TunnelKind::Erspan, frame)
            }
        }
        ether_type::ERSPAN_III => return erspan3(rest),
        ether_type::WCCP => {
            // WCCP v2 puts a 4-byte redirect header before the IP packet, v1 none.
            let ip = match rest.first() {
                Some(b) if b >> 4 == 4 => rest,
                _ => rest
                    .get(field::wccp::LEN..)
                    .ok_or(SkipReason::MalformedTunnel)?,
            };
            return Ok(Encap {
                kind: TunnelKind::Gre,
                id,
                inner: Inner::Ip(ip, IpVersion::V4),
            });
        }
        ether_type::CISCO_METADATA => {
            use field::cisco_metadata as cmd;
            let ether = be16(rest, cmd::ETHER_TYPE).ok_or(SkipReason::MalformedTunnel)?;
            let len = cmd::LEN + usize::from(*rest.get(cmd::LENGTH).unwrap_or(&0)) * 4;
            let payload = rest.get(len..).ok_or(SkipReason::MalformedTunnel)?;
            if !gre_carries(ether) {
                return Err(SkipReason::UnsupportedTransport);
            }
            return Ok(Encap {
                kind: TunnelKind::Gre,
                id,
                inner: Inner::Ether(ether, payload),
            });
        }
        p if gre_carries(p) => (TunnelKind::Gre, rest),
        _ => return Err(SkipReason::UnsupportedTransport),
    };
    let ether = if kind == TunnelKind::Erspan {
        ether_type::TRANSPARENT_ETHERNET
    } else {
        protocol
    };
    Ok(Encap {
        kind,
        id,
        inner: Inner::Ether(ether, inner),
    })
}

/// GRE protocol types followed to IP through [`link::by_ether_type`].
fn gre_carries(protocol: u16) -> bool {
    matches!(
        protocol,
        ether_type::IPV4
            | ether_type::IPV6
            | ether_type::TRANSPARENT_ETHERNET
            | ether_type::PPP
            | ether_type::MPLS_UNICAST
            | ether_type::MPLS_MULTICAST
            | ether_type::NSH
    )
}

/// ERSPAN type II: (session id, mirrored Ethernet frame).
fn erspan2(data: &[u8]) -> Result<(u32, &[u8]), SkipReason> {
    use field::erspan2::*;
    let h = data.get(..LEN).ok_or(SkipReason::MalformedTunnel)?;
    if h[VERSION] >> 4 != 1 {
        return Err(SkipReason::MalformedTunnel);
    }
    let session = be16(h, SESSION).unwrap_or(0) & 0x3ff;
    Ok((u32::from(session), &data[LEN..]))
}

/// ERSPAN type III: an Ethernet frame or (frame type 2) an IP packet; other frame types
/// are not IP.
fn erspan3(data: &[u8]) -> Result<Encap<'_>, SkipReason> {
    use field::erspan3::*;
    let h = data.get(..LEN).ok_or(SkipReason::MalformedTunnel)?;
    if h[VERSION] >> 4 != 2 {
        return Err(SkipReason::MalformedTunnel);
    }
    let session = be16(h, SESSION).unwrap_or(0) & 0x3ff;
    let flags = be16(h, FLAGS).unwrap_or(0);
    let frame_type = (flags >> 10) & 0x1f;
    let len = if flags & 1 != 0 {
        LEN + PLATFORM_LEN
    } else {
        LEN
    };
    let frame = data.get(len..).ok_or(SkipReason::MalformedTunnel)?;
    let inner = match frame_type {
        FRAME_ETHERNET => Inner::Ether(ether_type::TRANSPARENT_ETHERNET, frame),
        FRAME_IP => Inner::Ip(frame, IpVersion::Either),
        _ => return Err(SkipReason::NotIp),
    };
    Ok(Encap {
        kind: TunnelKind::Erspan,
        id: Some(u32::from(session)),
        inner,
    })
}

/// The tunnel on UDP port `port`, if `payload` holds a consistent header of it. `declared`
/// is the payload length the UDP header states (`None` if below 8).
fn udp_tunnel(port: u16, payload: &[u8], declared: Option<usize>) -> Option<Encap<'_>> {
    match port {
        udp_port::VXLAN | udp_port::VXLAN_LINUX => vxlan(payload),
        udp_port::VXLAN_GPE => vxlan_gpe(payload),
        udp_port::GENEVE => geneve(payload),
        udp_port::GTP_U => gtpu(payload, declared),
        udp_port::TEREDO => teredo(payload, declared),
        udp_port::MPLS => {
            let top = be32(payload, 0)? >> 12;
            Some(Encap {
                kind: TunnelKind::MplsUdp,
                id: Some(top),
                inner: Inner::Ether(ether_type::MPLS_UNICAST, payload),
            })
        }
        udp_port::CAPWAP_DATA => capwap(payload),
        _ => None,
    }
}

fn vxlan(data: &[u8]) -> Option<Encap<'_>> {
    use field::vxlan::*;
    let flags = *data.get(FLAGS)?;
    if flags & FLAG_I == 0 || flags & RESERVED != 0 || data.len() < LEN {
        return None;
    }
    Some(Encap {
        kind: TunnelKind::Vxlan,
        id: be24(data, VNI),
        inner: Inner::Ether(ether_type::TRANSPARENT_ETHERNET, &data[LEN..]),
    })
}

/// Maps a VXLAN-GPE or NSH next-protocol number to the ether type it stands for.
pub(super) fn next_protocol_ether_type(next: u8) -> Option<u16> {
    Some(match next {
        1 => ether_type::IPV4,
        2 => ether_type::IPV6,
        3 => ether_type::TRANSPARENT_ETHERNET,
        4 => ether_type::NSH,
        5 => ether_type::MPLS_UNICAST,
        _ => return None,
    })
}

fn vxlan_gpe(data: &[u8]) -> Option<Encap<'_>> {
    use field::vxlan_gpe::*;
    let h = data.get(..LEN)?;
    let flags = h[FLAGS];
    if flags & field::vxlan::FLAG_I == 0 || flags & VERSION != 0 {
        return None;
    }
    let ether = if flags & FLAG_P != 0 {
        next_protocol_ether_type(h[NEXT_PROTOCOL])?
    } else {
        ether_type::TRANSPARENT_ETHERNET
    };
    Some(Encap {
        kind: TunnelKind::VxlanGpe,
        id: be24(h, VNI),
        inner: Inner::Ether(ether, &data[LEN..]),
    })
}

fn geneve(data: &[u8]) -> Option<Encap<'_>> {
    use field::geneve::*;
    let first = *data.get(VER_OPT_LEN)?;
    if first >> 6 != 0 {
        return None;
    }
    let len = LEN + usize::from(first & 0x3f) * 4;
    let protocol = be16(data, PROTOCOL)?;
    if !matches!(
        protocol,
        ether_type::TRANSPARENT_ETHERNET | ether_type::IPV4 | ether_type::IPV6
    ) {
        return None;
    }
    Some(Encap {
        kind: TunnelKind::Geneve,
        id: be24(data, VNI),
        inner: Inner::Ether(protocol, data.get(len..)?),
    })
}

/// Most GTP-U extension headers followed.
const MAX_GTPU_EXTENSIONS: usize = 8;

fn gtpu(data: &[u8], declared: Option<usize>) -> Option<Encap<'_>> {
    use field::gtpu::*;
    let h = data.get(..LEN)?;
    let flags = h[FLAGS];
    // Version 1, protocol type GTP (not GTP'), a G-PDU whose length matches the UDP's.
    if flags >> 5 != 1 || flags & 0x10 == 0 || h[MESSAGE_TYPE] != G_PDU {
        return None;
    }
    let length = usize::from(be16(h, LENGTH)?);
    if declared != Some(LEN + length) {
        return None;
    }
    let mut at = LEN;
    if flags & 0x07 != 0 {
        at += OPTIONAL_LEN;
        let mut next = if flags & 0x04 != 0 {
            *data.get(NEXT_EXTENSION)?
        } else {
            0
        };
        for _ in 0..MAX_GTPU_EXTENSIONS {
            if next == 0 {
                break;
            }
            let len = usize::from(*data.get(at)?) * 4;
            if len == 0 {
                return None;
            }
            next = *data.get(at + len - 1)?;
            at += len;
        }
        if next != 0 {
            return None;
        }
    }
    Some(Encap {
        kind: TunnelKind::Gtpu,
        id: be32(h, TEID.start),
        inner: Inner::Ip(data.get(at..)?, IpVersion::Either),
    })
}

fn teredo(data: &[u8], declared: Option<usize>) -> Option<Encap<'_>> {
    use field::teredo::*;
    let mut at = 0;
    if data.get(..2)? == AUTH {
        let id_len = usize::from(*data.get(AUTH_ID_LEN)?);
        let au_len = usize::from(*data.get(AUTH_AU_LEN)?);
        at += AUTH_FIXED_LEN + id_len + au_len;
    }
    if data.get(at..at + 2)? == ORIGIN {
        at += ORIGIN_LEN;
    }
    let ipv6 = data.get(at..)?;
    // The IPv6 header must account for exactly the rest of the UDP payload.
    let payload_len = usize::from(be16(ipv6, 4..6)?);
    if ipv6.first()? >> 4 != 6 || declared != Some(at + 40 + payload_len) {
        return None;
    }
    Some(Encap {
        kind: TunnelKind::Teredo,
        id: None,
        inner: Inner::Ip(ipv6, IpVersion::V6),
    })
}

fn capwap(data: &[u8]) -> Option<Encap<'_>> {
    use field::capwap::*;
    let h = data.get(..LEN)?;
    if h[PREAMBLE] != 0 {
        return None; // another version, or a DTLS-protected packet
    }
    let bits = be16(h, HLEN_RID_WBID_T)?;
    let header_len = usize::from(bits >> 11) * 4;
    let wbid = (bits >> 1) & 0x1f;
    let native = bits & 1 != 0;
    let flags = h[FLAGS];
    if header_len < LEN || flags & FLAG_K != 0 {
        return None;
    }
    if flags & FLAG_F != 0 && be16(h, FRAGMENT_OFFSET)? >> 3 != 0 {
        return None; // a later fragment: no inner header
    }
    let frame = data.get(header_len..)?;
    let inner = if !native {
        Inner::Ether(ether_type::TRANSPARENT_ETHERNET, frame)
    } else if wbid == WBID_IEEE80211 {
        let (ether, rest) = ieee80211_llc(frame)?;
        Inner::Ether(ether, rest)
    } else {
        return None;
    };
    Some(Encap {
        kind: TunnelKind::Capwap,
        id: None,
        inner,
    })
}

/// An unprotected IEEE 802.11 data frame with an LLC/SNAP header: (ether type, payload).
/// Cisco access points send the frame control field byte-swapped (Wireshark's
/// `capwap.swap_frame_control`); either order is taken, whichever reads as a data frame.
fn ieee80211_llc(frame: &[u8]) -> Option<(u16, &[u8])> {
    use field::ieee80211::*;
    let fc = frame.get(FRAME_CONTROL)?;
    // Version 0, type data: the low nibble of the first byte is 0b1000.
    let (subtype_byte, flags) = if fc[0] & 0x0f == 0x08 {
        (fc[0], fc[1])
    } else if fc[1] & 0x0f == 0x08 {
        (fc[1], fc[0])
    } else {
        return None;
    };
    let (to_ds_from_ds, protected, order) = (flags & 0x03, flags & 0x40 != 0, flags & 0x80 != 0);
    let qos = subtype_byte & 0x80 != 0;
    if protected || subtype_byte & 0x40 != 0 {
        return None; // encrypted, or a null-data frame without a body
    }
    let mut len = LEN;
    if to_ds_from_ds == 0x03 {
        len += ADDR4_LEN;
    }
    if qos {
        len += QOS_LEN;
        if order {
            len += HT_CONTROL_LEN;
        }
    }
    let llc = frame.get(len..)?;
    link::llc_snap_ether_type(llc)
}

#[cfg(test)]
mod tests {
    use super::super::{decode, linktype, DecodeOptions, DecodedPacket};
    use super::*;
    use std::net::Ipv6Addr;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
    }
    fn inner(f: &[u8]) -> Result<DecodedPacket, SkipReason> {
        decode(
            linktype::ETHERNET,
            f,
            0,
            f.len() as u32,
            &DecodeOptions::INNER,
        )
    }
    fn outer(f: &[u8]) -> Result<DecodedPacket, SkipReason> {
        decode(
            linktype::ETHERNET,
            f,
            0,
            f.len() as u32,
            &DecodeOptions::OUTER,
        )
    }
    fn netfound(f: &[u8]) -> Result<DecodedPacket, SkipReason> {
        decode(
            linktype::ETHERNET,
            f,
            0,
            f.len() as u32,
            &DecodeOptions::NETFOUND,
        )
    }
    /// Every prefix of a frame decodes without panicking, in every mode.
    fn prefixes_do_not_panic(f: &[u8]) {
        for n in 0..=f.len() {
            for opts in [
                DecodeOptions::INNER,
                DecodeOptions::OUTER,
                DecodeOptions::NETFOUND,
            ] {
                let _ = decode(linktype::ETHERNET, &f[..n], 0, f.len() as u32, &opts);
            }
        }
    }

    // vxlan.pcap frame 1 (first 110 bytes): VXLAN (VNI 123) carrying Ethernet, IPv4, ICMP echo request
    const VXLAN_ICMP: [u8; 110] = [
        0x00, 0x16, 0x3e, 0x08, 0x71, 0xcf, 0x36, 0xdc, 0x85, 0x1e, 0xb3, 0x40, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x86, 0xd2, 0xc0, 0x40, 0x00, 0x40, 0x11, 0x51, 0x52, 0xc0, 0xa8, 0xcb, 0x01,
        0xc0, 0xa8, 0xca, 0x01, 0xb0, 0x5d, 0x12, 0xb5, 0x00, 0x72, 0x00, 0x00, 0x08, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x30, 0x88, 0x01, 0x00, 0x02, 0x00, 0x16, 0x3e, 0x37,
        0xf6, 0x04, 0x08, 0x00, 0x45, 0x00, 0x00, 0x54, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x23,
        0x4f, 0xc0, 0xa8, 0xcb, 0x03, 0xc0, 0xa8, 0xcb, 0x05, 0x08, 0x00, 0xf6, 0xf2, 0x05, 0x0c,
        0x00, 0x01, 0xfc, 0xe2, 0x97, 0x51, 0x00, 0x00, 0x00, 0x00, 0xa6, 0xf8, 0x02, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x10, 0x11,
    ];
    // ndpi_gre.pcapng frame 1 (first 90 bytes): 802.1Q, IPv4, PPTP enhanced GRE (key, sequence, ack), PPP, IPv4, UDP SIP
    const GRE_PPP_UDP: [u8; 90] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x37, 0xf4, 0x7c, 0x6e, 0x91, 0x81, 0x00, 0x00,
        0x8e, 0x08, 0x00, 0x45, 0x00, 0x01, 0x6e, 0xaf, 0xa5, 0x00, 0x00, 0xf2, 0x2f, 0x58, 0x4f,
        0x6d, 0x69, 0xe4, 0xfd, 0x0a, 0xb1, 0x62, 0x54, 0x30, 0x81, 0x88, 0x0b, 0x01, 0x4a, 0x98,
        0x50, 0x00, 0x00, 0x00, 0x6a, 0x00, 0x00, 0x00, 0x8c, 0xff, 0x03, 0x00, 0x21, 0x45, 0xa0,
        0x01, 0x46, 0x38, 0xc1, 0x00, 0x00, 0x3f, 0x11, 0x4d, 0xfb, 0xc0, 0xa8, 0x0a, 0xd2, 0xc0,
        0xa8, 0x67, 0x28, 0x13, 0xc4, 0x13, 0xc4, 0x01, 0x32, 0x57, 0xd5, 0x53, 0x49, 0x50, 0x2f,
    ];
    // erspan-type-ii-2.pcap frame 1: GRE with sequence, ERSPAN II (session 1), Ethernet, IPv4, UDP HSRP
    const ERSPAN2_UDP: [u8; 112] = [
        0x00, 0x0c, 0x29, 0xf1, 0x58, 0x1e, 0x00, 0x50, 0x56, 0xc0, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x62, 0x01, 0x28, 0x40, 0x00, 0xfc, 0x2f, 0x74, 0xeb, 0xc0, 0xa8, 0xc3, 0x43,
        0xc0, 0xa8, 0xc3, 0xc4, 0x10, 0x00, 0x88, 0xbe, 0x00, 0x10, 0x95, 0x28, 0x10, 0x65, 0xc0,
        0x01, 0x00, 0x08, 0x40, 0x65, 0x01, 0x00, 0x5e, 0x00, 0x00, 0x02, 0x00, 0x00, 0x0c, 0x07,
        0xac, 0xfe, 0x08, 0x00, 0x45, 0xc0, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x01, 0x11, 0x69,
        0x31, 0x0a, 0xc8, 0x65, 0x02, 0xe0, 0x00, 0x00, 0x02, 0x07, 0xc1, 0x07, 0xc1, 0x00, 0x1c,
        0xd9, 0x65, 0x00, 0x00, 0x10, 0x01, 0x03, 0x69, 0xfe, 0x00, 0x63, 0x69, 0x73, 0x63, 0x6f,
        0x00, 0x00, 0x00, 0x0a, 0xc8, 0x65, 0x01,
    ];
    // erspan-type-iii-ft-0.pcap frame 1 (first 100 bytes): GRE, ERSPAN III (frame type 0), Ethernet, 802.1Q, IPv4, ICMP
    const ERSPAN3_ICMP: [u8; 100] = [
        0x00, 0x50, 0x56, 0xac, 0xc8, 0x0c, 0xf8, 0xc2, 0x88, 0x90, 0xd2, 0x7b, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x8a, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x2f, 0x3d, 0x97, 0x0a, 0x1d, 0x1e, 0x68,
        0x0a, 0x1d, 0x0b, 0x0d, 0x00, 0x00, 0x22, 0xeb, 0x20, 0x14, 0x00, 0x00, 0xa3, 0x59, 0x5b,
        0xff, 0x00, 0x00, 0x00, 0x06, 0x00, 0x50, 0x56, 0xac, 0x18, 0xa0, 0xf8, 0xc2, 0x88, 0x90,
        0xd2, 0x7b, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00, 0x45, 0x00, 0x00, 0x54, 0x9d, 0x12, 0x40,
        0x00, 0x3f, 0x01, 0x6b, 0x47, 0x0a, 0x1d, 0x0b, 0x01, 0x0a, 0x1d, 0x14, 0x15, 0x08, 0x00,
        0x26, 0x9c, 0x3f, 0xcb, 0x00, 0xe2, 0x22, 0x64, 0x90, 0x5d,
    ];
    // erspan-type-iii-ft-7.pcap frame 1 (first 64 bytes): GRE, ERSPAN III with frame type 7 (not Ethernet)
    const ERSPAN3_FT7: [u8; 64] = [
        0x00, 0x10, 0x18, 0xb3, 0x8f, 0x10, 0x88, 0x1d, 0xfc, 0xc9, 0xdc, 0x03, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x70, 0x00, 0x00, 0x00, 0x00, 0xff, 0x2f, 0x36, 0x69, 0xc0, 0xa8, 0x01, 0xac,
        0xc0, 0xa8, 0x01, 0xf9, 0x10, 0x00, 0x22, 0xeb, 0x00, 0x00, 0xba, 0xde, 0x20, 0x01, 0x18,
        0x65, 0x34, 0x76, 0x0b, 0x01, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0xab, 0xc5, 0x00, 0x00,
        0x4b, 0x87, 0x01, 0x00,
    ];
    // geneve-gcp.pcap frame 1: Geneve (40 option bytes) carrying IPv4 directly, TCP
    const GENEVE_TCP: [u8; 130] = [
        0x42, 0x01, 0xc0, 0xa8, 0x64, 0x03, 0x42, 0x01, 0xc0, 0xa8, 0x64, 0xfe, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x74, 0x00, 0x00, 0x40, 0x00, 0x02, 0x11, 0x2e, 0x27, 0xc0, 0xa8, 0x64, 0xfe,
        0xc0, 0xa8, 0x64, 0x03, 0xf5, 0xfe, 0x17, 0xc1, 0x00, 0x60, 0x00, 0x00, 0x0a, 0x00, 0x08,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x32, 0x01, 0x01, 0x80, 0x00, 0x00, 0xd1, 0x01, 0x32,
        0x02, 0x04, 0x08, 0x00, 0x00, 0x0d, 0xc0, 0xa8, 0x64, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x32, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34,
        0x45, 0x00, 0x00, 0x28, 0xd9, 0x44, 0x00, 0x00, 0x40, 0x06, 0x58, 0x37, 0xc0, 0xa8, 0x64,
        0x02, 0xc0, 0xa8, 0x64, 0x01, 0x0b, 0x59, 0x1f, 0x90, 0x2d, 0x5a, 0xde, 0x40, 0x78, 0xe9,
        0xbf, 0xda, 0x50, 0x00, 0x02, 0x00, 0xf5, 0x47, 0x00, 0x00,
    ];
    // ndpi_ipv6_in_gtp.pcap frame 1 (first 110 bytes): QinQ, IPv4, UDP 2152, GTP-U (TEID 0x12808fb8), IPv6, UDP
    const GTP_IPV6_UDP: [u8; 110] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x34, 0xb3, 0x54, 0x07, 0xca, 0x56, 0x81, 0x00, 0x0c,
        0xa1, 0x81, 0x00, 0x60, 0x05, 0x08, 0x00, 0x45, 0x68, 0x00, 0x80, 0x68, 0x49, 0x00, 0x00,
        0xff, 0x11, 0xee, 0x79, 0x0a, 0xee, 0x50, 0x1a, 0x0a, 0xee, 0xfe, 0x4b, 0x08, 0x68, 0x08,
        0x68, 0x00, 0x6c, 0x00, 0x00, 0x30, 0xff, 0x00, 0x5c, 0x12, 0x80, 0x8f, 0xb8, 0x60, 0x08,
        0xb8, 0x52, 0x00, 0x34, 0x11, 0x40, 0x26, 0x07, 0xfc, 0x20, 0x40, 0x52, 0x03, 0x9e, 0x49,
        0x0a, 0xea, 0x4d, 0x17, 0xfe, 0xe0, 0x9c, 0xfd, 0x00, 0x97, 0x6a, 0xbc, 0x67, 0x19, 0x3e,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0xbf, 0xe0, 0x64, 0x3a, 0x00, 0x34, 0x37,
        0x48, 0x80, 0x6e, 0x15, 0x97,
    ];
    // ndpi_gtp_false_positive.pcapng frame 1: IPv4 UDP to 3386 whose payload is not GTP-U
    const GTP_FALSE_POSITIVE: [u8; 81] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x9b, 0x53, 0xb2, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x43, 0xb8, 0xc4, 0x00, 0x00, 0x3f, 0x11, 0xd0, 0x82, 0x18, 0x01, 0x21, 0x42,
        0x3e, 0x38, 0x7a, 0xe8, 0x72, 0x47, 0x0d, 0x3a, 0x00, 0x2f, 0x7f, 0x86, 0x27, 0x00, 0x00,
        0x00, 0x02, 0x59, 0x00, 0x00, 0xc8, 0x00, 0x32, 0x5e, 0xa5, 0x6f, 0x01, 0x00, 0x00, 0x00,
        0x1d, 0xad, 0x25, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    ];
    // ndpi_teredo.pcap frame 1: Teredo with an authentication indicator, IPv6, ICMPv6 router solicitation
    const TEREDO_ICMPV6: [u8; 103] = [
        0x6c, 0x41, 0x6a, 0x8c, 0x80, 0x89, 0x00, 0x1b, 0x17, 0x00, 0x01, 0x15, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x59, 0x59, 0xba, 0x00, 0x00, 0x7e, 0x11, 0xe9, 0x2b, 0x0a, 0x70, 0x10, 0x6a,
        0xc2, 0x88, 0x1c, 0x4c, 0xcd, 0x21, 0x0d, 0xd8, 0x00, 0x45, 0x7d, 0x87, 0x00, 0x01, 0x00,
        0x00, 0xb1, 0x1b, 0x3f, 0xea, 0x46, 0xa9, 0xaf, 0xe9, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00,
        0x08, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xfe, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x85, 0x00, 0x7d, 0x38, 0x00, 0x00, 0x00, 0x00,
    ];
    // nsh-over-vxlan-gpe.pcap frame 1: VXLAN-GPE (UDP 4790), NSH (MD type 2), IPv4, UDP
    const NSH_GPE_UDP: [u8; 106] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x5c, 0x40, 0x23, 0x40, 0x00, 0x40, 0x11, 0xfc, 0x6b, 0x7f, 0x00, 0x00, 0x01,
        0x7f, 0x00, 0x00, 0x01, 0x12, 0xb6, 0x12, 0xb6, 0x00, 0x48, 0x49, 0xf7, 0x0c, 0x00, 0x00,
        0x04, 0xff, 0xff, 0xff, 0x00, 0x30, 0x06, 0x02, 0x01, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01,
        0x02, 0x01, 0x12, 0x34, 0x56, 0x78, 0x00, 0x02, 0x03, 0x01, 0x12, 0x34, 0x56, 0x78, 0x45,
        0x00, 0x00, 0x20, 0xd4, 0x31, 0x00, 0x00, 0xff, 0x11, 0x66, 0x47, 0xc0, 0xa8, 0x00, 0x01,
        0xc0, 0xa8, 0x00, 0x02, 0x27, 0x10, 0x4e, 0x20, 0x00, 0x0c, 0x21, 0x78, 0x74, 0x65, 0x73,
        0x74,
    ];
    // mpls-over-udp.pcap frame 1 (first 90 bytes): UDP 6635, one MPLS label (21), IPv4, ICMP echo
    const MPLS_UDP_ICMP: [u8; 90] = [
        0x52, 0x9a, 0x00, 0xc8, 0x4f, 0x88, 0x52, 0x9a, 0x00, 0x82, 0x5c, 0x62, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x74, 0x67, 0x6f, 0x00, 0x00, 0x40, 0x11, 0xe3, 0xfb, 0x0a, 0x64, 0x0c, 0xaa,
        0x0a, 0x64, 0x0d, 0x9d, 0xe5, 0x4b, 0x19, 0xeb, 0x00, 0x60, 0x00, 0x00, 0x00, 0x01, 0x51,
        0x3f, 0x45, 0x00, 0x00, 0x54, 0x67, 0x6f, 0x40, 0x00, 0x3f, 0x01, 0xc0, 0x22, 0x0a, 0x03,
        0x00, 0x0a, 0x0a, 0x01, 0x00, 0x0a, 0x08, 0x00, 0x76, 0x43, 0xa6, 0xeb, 0x00, 0x10, 0x94,
        0x07, 0x3f, 0x5e, 0x00, 0x00, 0x00, 0x00, 0x45, 0x88, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    // ndpi_4in4tunnel.pcap frame 1 (first 80 bytes): QinQ, IPv4, IPv4, UDP
    const IP4IN4_UDP: [u8; 80] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0xa4, 0xc6, 0x4f, 0x3b, 0xb3, 0x9a, 0x81, 0x00, 0x66,
        0x58, 0x81, 0x00, 0x61, 0xf9, 0x08, 0x00, 0x45, 0xb8, 0x00, 0x94, 0xe8, 0x58, 0x00, 0x00,
        0xff, 0x04, 0x11, 0x48, 0x45, 0x43, 0x23, 0x92, 0x29, 0xca, 0x2e, 0x6e, 0x45, 0xb8, 0x00,
        0x80, 0x00, 0x01, 0x00, 0x00, 0xfe, 0x11, 0xde, 0x84, 0x0a, 0x0a, 0x64, 0x19, 0x0a, 0x0a,
        0x65, 0x02, 0xf3, 0x9f, 0x42, 0x68, 0x00, 0x6c, 0x4b, 0x9a, 0x00, 0x02, 0x00, 0x00, 0x04,
        0x73, 0x6c, 0x10, 0x00, 0x00,
    ];
    // ndpi_6in4tunnel.pcap frame 1 (first 100 bytes): IPv4, IPv6, ICMPv6 echo request
    const IP6IN4_ICMPV6: [u8; 100] = [
        0x00, 0x22, 0x90, 0xde, 0x3b, 0xd9, 0x00, 0x00, 0x24, 0xce, 0x81, 0x34, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x7c, 0xb5, 0x81, 0x40, 0x00, 0xff, 0x29, 0x17, 0x37, 0xae, 0x03, 0x49, 0x18,
        0xb8, 0x69, 0xff, 0x1a, 0x60, 0x00, 0x00, 0x00, 0x00, 0x40, 0x3a, 0x3f, 0x20, 0x01, 0x04,
        0x70, 0x1f, 0x17, 0x01, 0x3f, 0x3e, 0x97, 0x0e, 0xff, 0xfe, 0x73, 0x4d, 0xec, 0x26, 0x04,
        0xa8, 0x80, 0x00, 0x01, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x02, 0x24, 0xb0, 0x01, 0x80,
        0x00, 0xe0, 0xbd, 0x5d, 0x8f, 0x01, 0x5a, 0x5d, 0x4e, 0x15, 0x56, 0x00, 0x00, 0x00, 0x00,
        0xa8, 0xdd, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11,
    ];
    // ndpi_4in6tunnel.pcap frame 1 (first 110 bytes): IPv6, IPv4, TCP
    const IP4IN6_TCP: [u8; 110] = [
        0x00, 0x01, 0x02, 0xba, 0x76, 0x8e, 0x00, 0x00, 0x00, 0x49, 0xf4, 0x87, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x34, 0x04, 0x3f, 0x22, 0xe0, 0x16, 0x85, 0xed, 0xa7, 0x38, 0xcc,
        0x58, 0xbd, 0xf3, 0xf1, 0xaa, 0x3f, 0x22, 0xd8, 0x34, 0x4a, 0xba, 0x94, 0x15, 0x2a, 0xac,
        0x34, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x45, 0x00, 0x00, 0x34, 0x7b, 0xf0,
        0x40, 0x00, 0x7f, 0x06, 0xab, 0x1f, 0xc0, 0xa8, 0x00, 0x01, 0x0a, 0x0a, 0x0a, 0x01, 0xfb,
        0xc7, 0x01, 0xbb, 0xdf, 0xe1, 0x3e, 0x82, 0x00, 0x00, 0x00, 0x00, 0x80, 0x02, 0xff, 0xff,
        0x7e, 0xa5, 0x00, 0x00, 0x02, 0x04, 0x05, 0x84, 0x01, 0x03, 0x03, 0x08, 0x01, 0x01, 0x04,
        0x02, 0x00, 0x00, 0x00, 0x00,
    ];
    // ndpi_6in6tunnel.pcap frame 1: IPv6, IPv6, UDP
    const IP6IN6_UDP: [u8; 106] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x34, 0x29, 0x40, 0x20, 0x01, 0x04, 0xf8, 0x00, 0x04, 0x00, 0x07,
        0x02, 0xe0, 0x81, 0xff, 0xfe, 0x52, 0xff, 0xff, 0x20, 0x01, 0x04, 0xf8, 0x00, 0x04, 0x00,
        0x07, 0x02, 0xe0, 0x81, 0xff, 0xfe, 0x52, 0x9a, 0x6b, 0x60, 0x00, 0x00, 0x00, 0x00, 0x0c,
        0x11, 0x40, 0xde, 0xad, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xbe, 0xef, 0xca, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xba, 0xbe, 0x75, 0x30, 0x32, 0xc8, 0x00, 0x0c, 0x83, 0xd2, 0x58, 0x58, 0x58,
        0x58,
    ];
    // wccp_redirect_gre.pcap frame 1 (first 90 bytes): GRE 0x883e, WCCP redirect header, IPv4, TCP
    const WCCP_TCP: [u8; 90] = [
        0x00, 0x14, 0x5e, 0x28, 0x99, 0xa8, 0x00, 0x0f, 0x35, 0x3a, 0xab, 0x40, 0x08, 0x00, 0x45,
        0x00, 0x01, 0x0c, 0xac, 0x83, 0x00, 0x00, 0xfd, 0x2f, 0xa4, 0x2e, 0x0a, 0xfe, 0x7f, 0xc2,
        0x0a, 0xfe, 0xd6, 0x52, 0x00, 0x00, 0x88, 0x3e, 0x05, 0x59, 0x00, 0x48, 0x45, 0x00, 0x00,
        0xf0, 0x91, 0x14, 0x40, 0x00, 0x40, 0x06, 0xa6, 0x50, 0x0a, 0xfe, 0x7f, 0xc3, 0x0a, 0xfe,
        0x6c, 0xe4, 0x05, 0x0b, 0x01, 0xbd, 0x83, 0x83, 0xa1, 0x8a, 0x55, 0x0a, 0xc8, 0x9d, 0x80,
        0x18, 0xf9, 0x8f, 0x29, 0x09, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x9e, 0x1e,
    ];
    // various_gre.pcap frame 25 (first 90 bytes): 802.1Q, IPv4, GRE with key 0x28, Cisco MetaData, IPv4, ICMP
    const GRE_CMD_ICMP: [u8; 90] = [
        0xaa, 0xbb, 0xcc, 0x00, 0x02, 0x00, 0xaa, 0xbb, 0xcc, 0x00, 0x01, 0x00, 0x81, 0x00, 0x04,
        0xbd, 0x08, 0x00, 0x45, 0x00, 0x00, 0x88, 0x00, 0x91, 0x00, 0x00, 0xff, 0x2f, 0x25, 0x51,
        0x0a, 0xac, 0x40, 0x06, 0x0a, 0xac, 0x40, 0x07, 0x20, 0x00, 0x89, 0x09, 0x00, 0x00, 0x00,
        0x28, 0x08, 0x00, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0x45, 0x00, 0x00, 0x64, 0x00, 0x05,
        0x00, 0x00, 0xff, 0x01, 0x61, 0x04, 0xac, 0x11, 0x01, 0x36, 0xac, 0x11, 0x01, 0x37, 0x08,
        0x00, 0x64, 0xfe, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x19, 0x3f,
    ];
    // ndpi_capwap_data.pcapng frame 1 (first 140 bytes): QinQ, IPv4, UDP 5247, CAPWAP (802.11 binding), 802.11 data (swapped frame control), LLC/SNAP, IPv4, TCP
    const CAPWAP_TCP: [u8; 140] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0xa4, 0xc6, 0x4f, 0x3b, 0xb3, 0xab, 0x81, 0x00, 0x80,
        0x5e, 0x81, 0x00, 0x80, 0x03, 0x08, 0x00, 0x45, 0x00, 0x00, 0x88, 0x54, 0x39, 0x40, 0x00,
        0xfe, 0x11, 0x06, 0xf6, 0xac, 0x32, 0x64, 0x9b, 0xac, 0x10, 0x64, 0x57, 0xa1, 0x30, 0x14,
        0x7f, 0x00, 0x74, 0x00, 0x00, 0x00, 0x20, 0x03, 0x20, 0x00, 0x00, 0x00, 0x00, 0x04, 0xbf,
        0x23, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x08, 0x2c, 0x00, 0x84, 0x80, 0x2d, 0x2b, 0x45,
        0x90, 0x54, 0xf2, 0x01, 0xe1, 0xb2, 0x99, 0x10, 0xf3, 0x11, 0xea, 0xee, 0xc1, 0x76, 0x30,
        0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x3c, 0x21, 0x22, 0x40,
        0x00, 0x40, 0x06, 0x3f, 0x1c, 0x0a, 0x01, 0x03, 0x44, 0x4a, 0x7d, 0x82, 0xbc, 0xb7, 0xb1,
        0x01, 0xbb, 0x0b, 0x21, 0x61, 0x6e, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xff, 0xff, 0x07,
        0x18, 0x00, 0x00, 0x02, 0x04,
    ];

    /// (src, dst, protocol, src port, dst port) of a decoded packet.
    fn five(p: &DecodedPacket) -> (IpAddr, IpAddr, u8, u16, u16) {
        (p.src, p.dst, p.protocol, p.src_port, p.dst_port)
    }

    fn tunnel(kind: TunnelKind, src: IpAddr, dst: IpAddr, id: Option<u32>) -> TunnelInfo {
        TunnelInfo {
            depth: 1,
            kind,
            outer_src: src,
            outer_dst: dst,
            id,
        }
    }

    #[test]
    fn vxlan_inner_outer_and_netfound() {
        let p = inner(&VXLAN_ICMP).unwrap();
        assert_eq!(
            five(&p),
            (v4("192.168.203.3"), v4("192.168.203.5"), 1, 0, 0)
        );
        assert_eq!(
            p.tunnel,
            tunnel(
                TunnelKind::Vxlan,
                v4("192.168.203.1"),
                v4("192.168.202.1"),
                Some(100)
            )
        );
        // The inner packet's own header fields are tokenized (TTL 64, total length 84).
        assert_eq!((p.fields.ttl, p.fields.total_len), (64, 84));
        for o in [outer(&VXLAN_ICMP).unwrap(), netfound(&VXLAN_ICMP).unwrap()] {
            assert_eq!(
                five(&o),
                (v4("192.168.203.1"), v4("192.168.202.1"), 17, 45149, 4789)
            );
            assert_eq!(o.tunnel, TunnelInfo::NONE);
        }
        prefixes_do_not_panic(&VXLAN_ICMP);
        // A VXLAN header cut by the snaplen: the packet stays the outer UDP packet.
        let cut = inner(&VXLAN_ICMP[..14 + 20 + 8 + 4]).unwrap();
        assert_eq!(
            (cut.protocol, cut.dst_port, cut.tunnel.depth),
            (17, 4789, 0)
        );
        // A VXLAN header without its I flag is not VXLAN.
        let mut no_i = VXLAN_ICMP;
        no_i[42] = 0;
        assert_eq!(inner(&no_i).unwrap().dst_port, 4789);
    }

    #[test]
    fn pptp_gre_carrying_ppp() {
        let p = inner(&GRE_PPP_UDP).unwrap();
        assert_eq!(
            five(&p),
            (v4("192.168.10.210"), v4("192.168.103.40"), 17, 5060, 5060)
        );
        assert_eq!(
            p.tunnel,
            tunnel(
                TunnelKind::Gre,
                v4("109.105.228.253"),
                v4("10.177.98.84"),
                Some(0x9850)
            )
        );
        assert!(p.vlan_tagged);
        // Outside inner mode a GRE packet is what it always was.
        assert_eq!(outer(&GRE_PPP_UDP), Err(SkipReason::UnsupportedTransport));
        assert_eq!(
            netfound(&GRE_PPP_UDP),
            Err(SkipReason::UnsupportedTransport)
        );
        // GRE cut inside its key: a malformed tunnel, not a panic.
        assert_eq!(
            inner(&GRE_PPP_UDP[..18 + 20 + 6]),
            Err(SkipReason::MalformedTunnel)
        );
        // An unknown GRE protocol type stays an unsupported transport.
        let mut unknown = GRE_PPP_UDP;
        unknown[38..40].copy_from_slice(&[0x00, 0x00]); // version 0, protocol 0x880b kept
        unknown[40..42].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(inner(&unknown), Err(SkipReason::UnsupportedTransport));
        prefixes_do_not_panic(&GRE_PPP_UDP);
    }

    #[test]
    fn erspan_types_ii_and_iii() {
        let p = inner(&ERSPAN2_UDP).unwrap();
        assert_eq!(
            five(&p),
            (v4("10.200.101.2"), v4("224.0.0.2"), 17, 1985, 1985)
        );
        assert_eq!(
            p.tunnel,
            tunnel(
                TunnelKind::Erspan,
                v4("192.168.195.67"),
                v4("192.168.195.196"),
                Some(1)
            )
        );
        let p = inner(&ERSPAN3_ICMP).unwrap();
        assert_eq!(five(&p), (v4("10.29.11.1"), v4("10.29.20.21"), 1, 0, 0));
        assert_eq!(
            p.tunnel,
            tunnel(
                TunnelKind::Erspan,
                v4("10.29.30.104"),
                v4("10.29.11.13"),
                Some(0)
            )
        );
        assert!(p.vlan_tagged);
        // Frame type 7 is not an Ethernet frame nor IP.
        assert_eq!(inner(&ERSPAN3_FT7), Err(SkipReason::NotIp));
        // An ERSPAN II header with another version is malformed.
        let mut bad = ERSPAN2_UDP;
        bad[42] = 0x70;
        assert_eq!(inner(&bad), Err(SkipReason::MalformedTunnel));
        for f in [&ERSPAN2_UDP[..], &ERSPAN3_ICMP, &ERSPAN3_FT7] {
            prefixes_do_not_panic(f);
        }
    }

    #[test]
    fn geneve_gtpu_teredo_nsh_mpls_capwap() {
        let p = inner(&GENEVE_TCP).unwrap();
        assert_eq!(
            five(&p),
            (v4("192.168.100.2"), v4("192.168.100.1"), 6, 2905, 8080)
        );
        assert_eq!((p.tunnel.kind.name(), p.tunnel.id), ("geneve", Some(0)));

        let p = inner(&GTP_IPV6_UDP).unwrap();
        assert_eq!(
            five(&p),
            (
                v6("2607:fc20:4052:39e:490a:ea4d:17fe:e09c"),
                v6("fd00:976a:bc67:193e::7"),
                17,
                49120,
                25658
            )
        );
        assert_eq!(
            p.tunnel,
            tunnel(
                TunnelKind::Gtpu,
                v4("10.238.80.26"),
                v4("10.238.254.75"),
                Some(0x1280_8fb8)
            )
        );

        let p = inner(&TEREDO_ICMPV6).unwrap();
        assert_eq!(
            five(&p),
            (v6("fe80::ffff:ffff:fffe"), v6("ff02::2"), 58, 0, 0)
        );
        assert_eq!(
            p.tunnel,
            tunnel(
                TunnelKind::Teredo,
                v4("10.112.16.106"),
                v4("194.136.28.76"),
                None
            )
        );

        let p = inner(&NSH_GPE_UDP).unwrap();
        assert_eq!(
            five(&p),
            (v4("192.168.0.1"), v4("192.168.0.2"), 17, 10000, 20000)
        );
        assert_eq!(
            (p.tunnel.kind, p.tunnel.id),
            (TunnelKind::VxlanGpe, Some(0xff_ffff))
        );

        let p = inner(&MPLS_UDP_ICMP).unwrap();
        assert_eq!(five(&p), (v4("10.3.0.10"), v4("10.1.0.10"), 1, 0, 0));
        assert_eq!(
            (p.tunnel.kind, p.tunnel.id),
            (TunnelKind::MplsUdp, Some(21))
        );

        let p = inner(&CAPWAP_TCP).unwrap();
        assert_eq!(
            five(&p),
            (v4("10.1.3.68"), v4("74.125.130.188"), 6, 47025, 443)
        );
        assert_eq!(
            p.tunnel,
            tunnel(
                TunnelKind::Capwap,
                v4("172.50.100.155"),
                v4("172.16.100.87"),
                None
            )
        );
        for f in [
            &GENEVE_TCP[..],
            &GTP_IPV6_UDP,
            &TEREDO_ICMPV6,
            &NSH_GPE_UDP,
            &MPLS_UDP_ICMP,
            &CAPWAP_TCP,
        ] {
            prefixes_do_not_panic(f);
            let o = outer(f).unwrap();
            assert_eq!((o.protocol, o.tunnel), (17, TunnelInfo::NONE));
        }
    }

    // nDPI's gtp_false_positive: UDP whose payload is not GTP-U, here moved to port 2152.
    #[test]
    fn udp_on_a_tunnel_port_that_is_not_the_tunnel_stays_udp() {
        let mut f = GTP_FALSE_POSITIVE;
        f[36..38].copy_from_slice(&2152u16.to_be_bytes());
        let p = inner(&f).unwrap();
        assert_eq!(
            five(&p),
            (v4("24.1.33.66"), v4("62.56.122.232"), 17, 29255, 2152)
        );
        assert_eq!(p.tunnel, TunnelInfo::NONE);
        // The same bytes on every other tunnel port.
        for port in [3544u16, 4789, 4790, 5247, 6081, 6635, 8472] {
            f[36..38].copy_from_slice(&port.to_be_bytes());
            let p = inner(&f).unwrap();
            assert_eq!((p.dst_port, p.tunnel.depth), (port, 0), "port {port}");
        }
        // A real GTP-U header whose length disagrees with UDP's is not taken either.
        let mut bad_len = GTP_IPV6_UDP;
        bad_len[52..54].copy_from_slice(&0x5du16.to_be_bytes());
        let p = inner(&bad_len).unwrap();
        assert_eq!((p.dst_port, p.tunnel.depth), (2152, 0));
    }

    #[test]
    fn ip_in_ip_all_four_and_gre_variants() {
        let p = inner(&IP4IN4_UDP).unwrap();
        assert_eq!(
            five(&p),
            (v4("10.10.100.25"), v4("10.10.101.2"), 17, 62367, 17000)
        );
        assert_eq!(
            p.tunnel,
            tunnel(
                TunnelKind::Ipip,
                v4("69.67.35.146"),
                v4("41.202.46.110"),
                None
            )
        );
        let p = inner(&IP6IN4_ICMPV6).unwrap();
        assert_eq!(
            five(&p),
            (
                v6("2001:470:1f17:13f:3e97:eff:fe73:4dec"),
                v6("2604:a880:1:20::224:b001"),
                58,
                0,
                0
            )
        );
        assert_eq!(p.tunnel.outer_src, v4("174.3.73.24"));
        let p = inner(&IP4IN6_TCP).unwrap();
        assert_eq!(
            five(&p),
            (v4("192.168.0.1"), v4("10.10.10.1"), 6, 64455, 443)
        );
        assert_eq!(p.tunnel.outer_dst, v6("344a:ba94:152a:ac34::2a"));
        let p = inner(&IP6IN6_UDP).unwrap();
        assert_eq!(
            five(&p),
            (v6("dead::beef"), v6("cafe::babe"), 17, 30000, 13000)
        );
        assert_eq!(p.tunnel.kind, TunnelKind::Ipip);
        let p = inner(&WCCP_TCP).unwrap();
        assert_eq!(
            five(&p),
            (v4("10.254.127.195"), v4("10.254.108.228"), 6, 1291, 445)
        );
        assert_eq!((p.tunnel.kind, p.tunnel.id), (TunnelKind::Gre, None));
        let p = inner(&GRE_CMD_ICMP).unwrap();
        assert_eq!(five(&p), (v4("172.17.1.54"), v4("172.17.1.55"), 1, 0, 0));
        assert_eq!((p.tunnel.kind, p.tunnel.id), (TunnelKind::Gre, Some(0x28)));
        for f in [
            &IP4IN4_UDP[..],
            &IP6IN4_ICMPV6,
            &IP4IN6_TCP,
            &IP6IN6_UDP,
            &WCCP_TCP,
            &GRE_CMD_ICMP,
        ] {
            prefixes_do_not_panic(f);
            assert_eq!(outer(f), Err(SkipReason::UnsupportedTransport));
        }
    }

    #[test]
    fn nesting_is_bounded() {
        // IP4IN4_UDP with more copies of its outer IPv4 header (protocol 4) in front, their
        // total length raised to cover what follows.
        let mut outer_ip = [0u8; 20];
        outer_ip.copy_from_slice(&IP4IN4_UDP[22..42]);
        outer_ip[2..4].copy_from_slice(&1500u16.to_be_bytes());
        let nested = |extra: usize| {
            let mut f = IP4IN4_UDP[..22].to_vec();
            for _ in 0..extra {
                f.extend_from_slice(&outer_ip);
            }
            f.extend_from_slice(&IP4IN4_UDP[22..42]);
            f.extend_from_slice(&IP4IN4_UDP[42..]);
            f
        };
        let deepest = usize::from(MAX_TUNNEL_DEPTH) - 1;
        let p = inner(&nested(deepest)).unwrap();
        assert_eq!((p.tunnel.depth, p.dst_port), (MAX_TUNNEL_DEPTH, 17000));
        assert_eq!(inner(&nested(deepest + 1)), Err(SkipReason::TunnelTooDeep));
        // Too deep is counted even when the last tunnel is a UDP one.
        let mut f = IP4IN4_UDP[..22].to_vec();
        for _ in 0..MAX_TUNNEL_DEPTH {
            f.extend_from_slice(&outer_ip);
        }
        f.extend_from_slice(&VXLAN_ICMP[14..]);
        assert_eq!(inner(&f), Err(SkipReason::TunnelTooDeep));
    }

    #[test]
    fn port_set() {
        for p in [2152, 3544, 4789, 4790, 5247, 6081, 6635, 8472] {
            assert!(is_tunnel_port(p), "{p}");
        }
        for p in [53, 443, 2151, 4788, 5246, 8473, 65535] {
            assert!(!is_tunnel_port(p), "{p}");
        }
        let names: Vec<_> = TunnelKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), 11);
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}

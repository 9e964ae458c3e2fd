//! Transport headers (TCP, UDP, ICMP, ICMPv6) read field by field, so that a header cut by
//! the snaplen still yields the fields that are present (the rest read as zero).
//!
//! Offsets are named once per protocol in a `field` module, like the RFC diagrams.

use super::ip::{parse_quoted, Quoted};
use super::link::IpVersion;
use super::{IcmpKind, SkipReason};
use netfm_tokenizer::{L4Fields, PAYLOAD_BYTES, TCP_OPTION_BYTES};

pub(super) const PROTO_ICMP: u8 = 1;
pub(super) const PROTO_TCP: u8 = 6;
pub(super) const PROTO_UDP: u8 = 17;
pub(super) const PROTO_ICMPV6: u8 = 58;

type Field = core::ops::Range<usize>;

mod tcp {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ: Field = 4..8;
    pub const ACK: Field = 8..12;
    /// High nibble: header length in 32-bit words.
    pub const DATA_OFFSET: usize = 12;
    /// CWR ECE URG ACK PSH RST SYN FIN (the NS bit lives in byte 12 and is dropped).
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const URGENT: Field = 18..20;
    pub const MIN_LEN: usize = 20;
}

mod udp {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const LEN: usize = 8;
}

/// ICMP and ICMPv6 share the layout of their first 8 bytes.
mod icmp {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    /// Echo request/reply identifier.
    pub const IDENTIFIER: Field = 4..6;
    /// Header length; for errors the quoted packet starts here.
    pub const LEN: usize = 8;
    /// Where netFound's echo "data" starts: PcapPlusPlus's echo header is the 8-byte ICMP
    /// header plus an 8-byte timestamp (`icmp_echo_hdr`), so 16 bytes are skipped.
    pub const ECHO_DATA: usize = 16;
}

/// ICMP message types this decoder distinguishes.
mod icmp_type {
    pub const V4_ECHO_REPLY: u8 = 0;
    pub const V4_ECHO_REQUEST: u8 = 8;
    /// Destination unreachable, source quench, redirect, time exceeded, parameter problem.
    pub const V4_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
    /// Destination unreachable, packet too big, time exceeded, parameter problem.
    pub const V6_ERRORS: core::ops::RangeInclusive<u8> = 1..=4;
}

/// What the transport decoder extracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Transport {
    pub src_port: u16,
    pub dst_port: u16,
    pub l4: L4Fields,
    pub payload: [u8; PAYLOAD_BYTES],
    pub icmp: Option<IcmpKind>,
    pub truncated: bool,
}

/// Big-endian reads from a fixed-size, zero-padded copy of a header (so a header cut by
/// the snaplen reads its missing fields as zero, and constant offsets need no checks).
fn be16<const N: usize>(h: &[u8; N], f: Field) -> u16 {
    u16::from_be_bytes([h[f.start], h[f.start + 1]])
}

fn be32<const N: usize>(h: &[u8; N], f: Field) -> u32 {
    u32::from_be_bytes([h[f.start], h[f.start + 1], h[f.start + 2], h[f.start + 3]])
}

/// The first `N` bytes of `data` starting at `from`, zero padded.
fn leading<const N: usize>(data: &[u8], from: usize) -> [u8; N] {
    let mut out = [0u8; N];
    let src = data.get(from..).unwrap_or_default();
    let n = src.len().min(N);
    out[..n].copy_from_slice(&src[..n]);
    out
}

/// Decodes the transport header of IP protocol `protocol`.
// Always inlined: the hot path (`decode_into`) and the tunnel code each get their copy.
#[inline(always)]
pub(super) fn parse(protocol: u8, data: &[u8]) -> Result<Transport, SkipReason> {
    match protocol {
        PROTO_TCP => parse_tcp(data),
        PROTO_UDP => parse_udp(data),
        PROTO_ICMP => parse_icmp(data, IpVersion::V4),
        PROTO_ICMPV6 => parse_icmp(data, IpVersion::V6),
        _ => Err(SkipReason::UnsupportedTransport),
    }
}

fn parse_tcp(data: &[u8]) -> Result<Transport, SkipReason> {
    if data.len() < tcp::DST_PORT.end {
        return Err(SkipReason::TruncatedTransport);
    }
    let header_len = match data.get(tcp::DATA_OFFSET) {
        Some(b) if b >> 4 < 5 => return Err(SkipReason::MalformedTransport),
        Some(b) => usize::from(b >> 4) * 4,
        None => tcp::MIN_LEN,
    };
    let truncated = data.len() < header_len;
    let h: [u8; tcp::MIN_LEN] = leading(data, 0);
    // Options: what lies between the fixed header and the declared header end, zero padded.
    let mut options = [0u8; TCP_OPTION_BYTES];
    let options_end = header_len.min(data.len());
    if let Some(opts) = data.get(tcp::MIN_LEN..options_end) {
        options[..opts.len()].copy_from_slice(opts);
    }
    Ok(Transport {
        src_port: be16(&h, tcp::SRC_PORT),
        dst_port: be16(&h, tcp::DST_PORT),
        l4: L4Fields::Tcp {
            flags: h[tcp::FLAGS],
            window: be16(&h, tcp::WINDOW),
            seq: be32(&h, tcp::SEQ),
            ack: be32(&h, tcp::ACK),
            urgent: be16(&h, tcp::URGENT),
            options,
        },
        payload: if truncated {
            [0; PAYLOAD_BYTES]
        } else {
            leading(data, header_len)
        },
        icmp: None,
        truncated,
    })
}

fn parse_udp(data: &[u8]) -> Result<Transport, SkipReason> {
    if data.len() < udp::DST_PORT.end {
        return Err(SkipReason::TruncatedTransport);
    }
    let truncated = data.len() < udp::LEN;
    let h: [u8; udp::LEN] = leading(data, 0);
    Ok(Transport {
        src_port: be16(&h, udp::SRC_PORT),
        dst_port: be16(&h, udp::DST_PORT),
        l4: L4Fields::Udp {
            length: be16(&h, udp::LENGTH),
        },
        payload: leading(data, udp::LEN),
        icmp: None,
        truncated,
    })
}

/// ICMP (`V4`) or ICMPv6 (`V6`).
fn parse_icmp(data: &[u8], version: IpVersion) -> Result<Transport, SkipReason> {
    if data.len() < icmp::CODE + 1 {
        return Err(SkipReason::TruncatedTransport);
    }
    let h: [u8; icmp::LEN] = leading(data, 0);
    let icmp_type = h[icmp::TYPE];
    let code = h[icmp::CODE];
    let (echo_request, error) = match version {
        IpVersion::V6 => (
            match icmp_type {
                icmp_type::V6_ECHO_REQUEST => Some(true),
                icmp_type::V6_ECHO_REPLY => Some(false),
                _ => None,
            },
            icmp_type::V6_ERRORS.contains(&icmp_type),
        ),
        _ => (
            match icmp_type {
                icmp_type::V4_ECHO_REQUEST => Some(true),
                icmp_type::V4_ECHO_REPLY => Some(false),
                _ => None,
            },
            icmp_type::V4_ERRORS.contains(&icmp_type),
        ),
    };
    let kind = match echo_request {
        Some(request) => IcmpKind::Echo {
            identifier: be16(&h, icmp::IDENTIFIER),
            request,
        },
        None if error => quoted_kind(data.get(icmp::LEN..).unwrap_or_default(), version),
        None => IcmpKind::Other,
    };
    // netFound: the data after the (16-byte) echo header for echo, else the message from its
    // type byte. ICMPv6 (never tokenized by netFound) follows the same rule.
    let payload = if echo_request.is_some() {
        leading(data, icmp::ECHO_DATA)
    } else {
        leading(data, 0)
    };
    Ok(Transport {
        src_port: 0,
        dst_port: 0,
        l4: L4Fields::Icmp { icmp_type, code },
        payload,
        icmp: Some(kind),
        truncated: data.len() < icmp::LEN,
    })
}

/// The quoted packet of an ICMP error, or `Other` when no IP header is quoted.
fn quoted_kind(quote: &[u8], version: IpVersion) -> IcmpKind {
    match parse_quoted(quote, version) {
        Some(Quoted {
            src,
            dst,
            protocol,
            transport,
        }) => {
            let (src_port, dst_port) = match protocol {
                PROTO_TCP | PROTO_UDP if transport.len() >= 4 => {
                    let ports: [u8; 4] = leading(transport, 0);
                    (be16(&ports, 0..2), be16(&ports, 2..4))
                }
                _ => (0, 0),
            };
            IcmpKind::Error {
                src,
                dst,
                protocol,
                src_port,
                dst_port,
            }
        }
        None => IcmpKind::Other,
    }
}

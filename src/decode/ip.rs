//! The IP layer, parsed with etherparse: IPv4 (options, fragments, the total length
//! bounding the payload) and IPv6 (the extension-header chain, fragments), reduced to the
//! fields netFound tokenizes and the transport bytes that follow.

use super::link::IpVersion;
use super::SkipReason;
use etherparse::err::{ipv4, ipv6};
use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv6's fixed header length, which netFound records as the "header length" of every IPv6
/// packet whatever its extension headers.
pub(super) const IPV6_HEADER_LEN: u8 = 40;

/// The IP header fields netFound tokenizes, plus what the transport decoder needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IpLayer<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IHL*4 (IPv4) or 40 (IPv6).
    pub header_len: u8,
    pub tos: u8,
    /// IPv4 total length; IPv6 payload length + 40 (wrapping, as netFound's u16).
    pub total_len: u16,
    /// IPv4 flags as 3 bits (frag-off high byte >> 5); 0 for IPv6.
    pub flags: u8,
    pub ttl: u8,
    /// IP protocol of the transport (after IPv6 extension headers).
    pub protocol: u8,
    /// Transport bytes: bounded by the IP length fields and by what was captured.
    pub payload: &'a [u8],
    pub first_fragment: bool,
    pub ext_headers: bool,
}

/// Parses an IP packet that the link layer announced as `version`.
// Always inlined: the hot path (`decode_into`) and the tunnel code each get their copy.
#[inline(always)]
pub(super) fn parse(data: &[u8], version: IpVersion) -> Result<IpLayer<'_>, SkipReason> {
    let nibble = data.first().ok_or(SkipReason::TruncatedIp)? >> 4;
    match (version, nibble) {
        (IpVersion::V4 | IpVersion::Either, 4) => parse_v4(data),
        (IpVersion::V6 | IpVersion::Either, 6) => parse_v6(data),
        _ => Err(SkipReason::MalformedIp),
    }
}

fn parse_v4(data: &[u8]) -> Result<IpLayer<'_>, SkipReason> {
    let header = Ipv4HeaderSlice::from_slice(data).map_err(|e| match e {
        ipv4::HeaderSliceError::Len(_) => SkipReason::TruncatedIp,
        ipv4::HeaderSliceError::Content(_) => SkipReason::MalformedIp,
    })?;
    let raw = header.slice();
    let header_len = raw.len();
    let total_len = header.total_len();
    // A total length shorter than the header is malformed (this includes 0, which some
    // segmentation-offload captures carry; netFound drops those packets too).
    if usize::from(total_len) < header_len {
        return Err(SkipReason::MalformedIp);
    }
    if header.fragments_offset().value() != 0 {
        return Err(SkipReason::IpFragment);
    }
    // The total length cuts off link-layer padding; the capture length cuts the rest.
    let end = usize::from(total_len).min(data.len());
    Ok(IpLayer {
        src: IpAddr::V4(Ipv4Addr::from(header.source())),
        dst: IpAddr::V4(Ipv4Addr::from(header.destination())),
        header_len: header_len as u8,
        tos: raw[1],
        total_len,
        flags: raw[6] >> 5,
        ttl: header.ttl(),
        protocol: header.protocol().0,
        payload: data.get(header_len..end).unwrap_or_default(),
        first_fragment: header.more_fragments(),
        ext_headers: false,
    })
}

fn parse_v6(data: &[u8]) -> Result<IpLayer<'_>, SkipReason> {
    let header = Ipv6HeaderSlice::from_slice(data).map_err(|e| match e {
        ipv6::HeaderSliceError::Len(_) => SkipReason::TruncatedIp,
        ipv6::HeaderSliceError::Content(_) => SkipReason::MalformedIp,
    })?;
    let after_header = data.get(usize::from(IPV6_HEADER_LEN)..).unwrap_or_default();
    let payload_len = header.payload_length();
    // Payload length 0 with bytes following is a jumbogram or an offloaded segment: the
    // captured bytes are the payload (as etherparse does).
    let ip_payload = if payload_len == 0 {
        after_header
    } else {
        &after_header[..usize::from(payload_len).min(after_header.len())]
    };
    let chain = walk_ipv6_extensions(header.next_header().0, ip_payload);
    let mut first_fragment = false;
    if let Some((offset, more)) = chain.fragment {
        if offset != 0 {
            return Err(SkipReason::IpFragment);
        }
        first_fragment = more;
    }
    if let Some(err) = chain.error {
        return Err(err);
    }
    let (protocol, payload) = (chain.protocol, chain.payload);
    Ok(IpLayer {
        src: IpAddr::V6(Ipv6Addr::from(header.source())),
        dst: IpAddr::V6(Ipv6Addr::from(header.destination())),
        header_len: IPV6_HEADER_LEN,
        tos: header.traffic_class(),
        total_len: payload_len.wrapping_add(u16::from(IPV6_HEADER_LEN)),
        flags: 0,
        ttl: header.hop_limit(),
        protocol,
        payload,
        first_fragment,
        ext_headers: chain.any_ext,
    })
}

/// The addresses, protocol and first transport bytes of the packet quoted inside an ICMP
/// error: a header and 8+ bytes of its payload, the rest usually cut. Lax on lengths,
/// strict on versions. `None` if no IP header is there.
pub(super) struct Quoted<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// Transport bytes of the quoted packet (empty for a non-first fragment).
    pub transport: &'a [u8],
}

pub(super) fn parse_quoted(data: &[u8], version: IpVersion) -> Option<Quoted<'_>> {
    let nibble = data.first()? >> 4;
    match (version, nibble) {
        (IpVersion::V4, 4) => {
            let header = Ipv4HeaderSlice::from_slice(data).ok()?;
            let transport = if header.fragments_offset().value() != 0 {
                &[][..]
            } else {
                data.get(header.slice().len()..).unwrap_or_default()
            };
            Some(Quoted {
                src: IpAddr::V4(Ipv4Addr::from(header.source())),
                dst: IpAddr::V4(Ipv4Addr::from(header.destination())),
                protocol: header.protocol().0,
                transport,
            })
        }
        (IpVersion::V6, 6) => {
            let header = Ipv6HeaderSlice::from_slice(data).ok()?;
            let rest = data.get(usize::from(IPV6_HEADER_LEN)..).unwrap_or_default();
            let chain = walk_ipv6_extensions(header.next_header().0, rest);
            let non_first = matches!(chain.fragment, Some((offset, _)) if offset != 0);
            let (protocol, transport) = (chain.protocol, chain.payload);
            Some(Quoted {
                src: IpAddr::V6(Ipv6Addr::from(header.source())),
                dst: IpAddr::V6(Ipv6Addr::from(header.destination())),
                protocol,
                transport: if non_first { &[][..] } else { transport },
            })
        }
        _ => None,
    }
}

/// Where an IPv6 extension header chain leads.
struct Ipv6Chain<'a> {
    /// The first next-header value that is not an extension header.
    protocol: u8,
    /// The bytes after the last extension header.
    payload: &'a [u8],
    any_ext: bool,
    /// (fragment offset in 8-byte units, more-fragments flag) of a fragment header.
    fragment: Option<(u16, bool)>,
    /// Set when the chain is cut short or too long; `protocol`/`payload` then describe the
    /// header that could not be read.
    error: Option<SkipReason>,
}

/// Most extension headers followed before the chain counts as malformed.
const MAX_IPV6_EXTENSIONS: usize = 16;

/// Walks the IPv6 extension header chain by hand (RFC 8200 section 4; AH per RFC 4302).
/// etherparse 0.21's lax extension slicing can violate a slice precondition on hostile
/// input (found by our fuzzer), so the chain is walked here with every length checked.
fn walk_ipv6_extensions(mut next: u8, mut data: &[u8]) -> Ipv6Chain<'_> {
    let mut chain = Ipv6Chain {
        protocol: next,
        payload: data,
        any_ext: false,
        fragment: None,
        error: None,
    };
    for _ in 0..MAX_IPV6_EXTENSIONS {
        let len = match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6, experimental.
            0 | 43 | 60 | 135 | 139 | 140 | 253 | 254 => {
                data.get(1).map(|&l| (usize::from(l) + 1) * 8)
            }
            44 => Some(8),
            51 => data.get(1).map(|&l| (usize::from(l) + 2) * 4),
            _ => return chain,
        };
        chain.any_ext = true;
        let Some(len) = len.filter(|&l| l <= data.len()) else {
            chain.error = Some(SkipReason::TruncatedIp);
            return chain;
        };
        if next == 44 {
            let field = u16::from_be_bytes([data[2], data[3]]);
            chain.fragment = Some((field >> 3, field & 1 == 1));
        }
        next = data[0];
        data = &data[len..];
        chain.protocol = next;
        chain.payload = data;
    }
    chain.error = Some(SkipReason::MalformedIp);
    chain
}

#[cfg(test)]
mod ipv6_chain_tests {
    use super::*;

    #[test]
    fn walks_hop_by_hop_then_fragment_to_udp() {
        let mut bytes = vec![44, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop, 8 bytes, next = fragment
        bytes.extend_from_slice(&[17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]); // offset 0, M=1
        bytes.extend_from_slice(&[0x12, 0x34]);
        let c = walk_ipv6_extensions(0, &bytes);
        assert_eq!(
            (c.protocol, c.payload, c.any_ext, c.fragment, c.error),
            (17, &[0x12, 0x34][..], true, Some((0, true)), None)
        );
    }

    #[test]
    fn cut_and_looping_chains_are_errors_not_panics() {
        assert_eq!(
            walk_ipv6_extensions(0, &[6, 1, 0, 0]).error,
            Some(SkipReason::TruncatedIp)
        );
        assert_eq!(
            walk_ipv6_extensions(60, &[]).error,
            Some(SkipReason::TruncatedIp)
        );
        let looping = [60u8, 0, 0, 0, 0, 0, 0, 0].repeat(MAX_IPV6_EXTENSIONS + 1);
        assert_eq!(
            walk_ipv6_extensions(60, &looping).error,
            Some(SkipReason::MalformedIp)
        );
        // The input the fuzzer found: must not panic.
        let crash = [
            0x60u8, 0xa1, 0xb2, 0xc3, 0xd4, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c,
            0x2c, 0x2c,
        ];
        let _ = walk_ipv6_extensions(0x2c, &crash);
    }
}

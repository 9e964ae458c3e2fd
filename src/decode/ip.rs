//! The IP layer, parsed with etherparse: IPv4 (options, fragments, the total length
//! bounding the payload) and IPv6 (the extension-header chain, fragments), reduced to the
//! fields netFound tokenizes and the transport bytes that follow.

use super::link::IpVersion;
use super::SkipReason;
use etherparse::err::{ipv4, ipv6, ipv6_exts};
use etherparse::{Ipv4HeaderSlice, Ipv6ExtensionSlice, Ipv6ExtensionsSlice, Ipv6HeaderSlice};
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
    let (exts, protocol, payload, ext_error) =
        Ipv6ExtensionsSlice::from_slice_lax(header.next_header(), ip_payload);
    let mut first_fragment = false;
    if exts.is_fragmenting_payload() {
        for ext in exts.clone() {
            if let Ipv6ExtensionSlice::Fragment(frag) = ext {
                if frag.fragment_offset().value() != 0 {
                    return Err(SkipReason::IpFragment);
                }
                first_fragment |= frag.more_fragments();
            }
        }
    }
    if let Some((err, _layer)) = ext_error {
        return Err(match err {
            ipv6_exts::HeaderSliceError::Len(_) => SkipReason::TruncatedIp,
            ipv6_exts::HeaderSliceError::Content(_) => SkipReason::MalformedIp,
        });
    }
    Ok(IpLayer {
        src: IpAddr::V6(Ipv6Addr::from(header.source())),
        dst: IpAddr::V6(Ipv6Addr::from(header.destination())),
        header_len: IPV6_HEADER_LEN,
        tos: header.traffic_class(),
        total_len: payload_len.wrapping_add(u16::from(IPV6_HEADER_LEN)),
        flags: 0,
        ttl: header.hop_limit(),
        protocol: protocol.0,
        payload,
        first_fragment,
        ext_headers: !exts.is_empty(),
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
            let (exts, protocol, transport, _err) =
                Ipv6ExtensionsSlice::from_slice_lax(header.next_header(), rest);
            let non_first = exts.is_fragmenting_payload()
                && exts
                    .clone()
                    .into_iter()
                    .any(|e| matches!(e, Ipv6ExtensionSlice::Fragment(f) if f.fragment_offset().value() != 0));
            Some(Quoted {
                src: IpAddr::V6(Ipv6Addr::from(header.source())),
                dst: IpAddr::V6(Ipv6Addr::from(header.destination())),
                protocol: protocol.0,
                transport: if non_first { &[][..] } else { transport },
            })
        }
        _ => None,
    }
}

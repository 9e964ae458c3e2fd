//! Link layers: strip the link header of a frame and say which IP version follows.
//!
//! Each header is a handful of fixed offsets, named once in a `field` module; VLAN tags
//! (802.1Q, 802.1ad and the pre-standard 0x9100 QinQ) are skipped however many there are,
//! and 802.3 frames with LLC/SNAP encapsulation are followed to their ether type (as
//! tshark does; netFound's PcapPlusPlus filter drops them).
//!
//! Native mode ([`Links::Native`]) also decodes the PPP and Cisco HDLC link types, and
//! follows PPPoE sessions, MPLS label stacks, NSH and (inside tunnels) Ethernet frames and
//! PPP; netFound mode ([`Links::Netfound`]) decodes exactly the link layers it always did.

use super::{linktype, SkipReason};

/// Which link layers are followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Links {
    /// netFound mode: the link types and ether types above only (its golden set was made
    /// with these rules).
    Netfound,
    /// Native mode: also PPP, Cisco HDLC, PPPoE sessions, MPLS and NSH.
    Native,
}

/// Which IP version the link layer announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IpVersion {
    V4,
    V6,
    /// Raw IP (LINKTYPE_RAW): the version nibble decides.
    Either,
}

/// The network-layer bytes of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LinkPayload<'a> {
    pub ip: &'a [u8],
    pub version: IpVersion,
    pub vlan_tagged: bool,
}

pub(super) mod ether_type {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const PROVIDER_BRIDGING: u16 = 0x88a8;
    pub const QINQ_LEGACY: u16 = 0x9100;
    /// An Ethernet frame (GRE's "transparent Ethernet bridging"; VXLAN, Geneve, ERSPAN).
    pub const TRANSPARENT_ETHERNET: u16 = 0x6558;
    pub const PPP: u16 = 0x880b;
    pub const PPPOE_SESSION: u16 = 0x8864;
    pub const MPLS_UNICAST: u16 = 0x8847;
    pub const MPLS_MULTICAST: u16 = 0x8848;
    /// Network Service Header (RFC 8300).
    pub const NSH: u16 = 0x894f;
    /// GRE protocol types of tunnels decoded in `tunnel`.
    pub const ERSPAN_I_II: u16 = 0x88be;
    pub const ERSPAN_III: u16 = 0x22eb;
    pub const WCCP: u16 = 0x883e;
    pub const CISCO_METADATA: u16 = 0x8909;
    /// Values up to 1500 are an 802.3 length, not an ether type.
    pub const MAX_8023_LENGTH: u16 = 1500;
}

/// Header layouts, as byte ranges.
mod field {
    pub type Field = core::ops::Range<usize>;

    /// Ethernet II.
    pub mod ethernet {
        pub const ETHER_TYPE: super::Field = 12..14;
        pub const LEN: usize = 14;
    }
    /// IEEE 802.2 LLC + SNAP after an 802.3 length field: DSAP, SSAP, control, OUI, type.
    pub mod llc_snap {
        pub const DSAP_SSAP_CONTROL: [u8; 3] = [0xaa, 0xaa, 0x03];
        pub const OUI: super::Field = 3..6;
        pub const ETHER_TYPE: super::Field = 6..8;
        pub const LEN: usize = 8;
    }
    /// One 802.1Q / 802.1ad tag (after the outer ether type).
    pub mod vlan_tag {
        pub const INNER_ETHER_TYPE: super::Field = 2..4;
        pub const LEN: usize = 4;
    }
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL).
    pub mod sll {
        pub const PROTOCOL: super::Field = 14..16;
        pub const LEN: usize = 16;
    }
    /// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2).
    pub mod sll2 {
        pub const PROTOCOL: super::Field = 0..2;
        pub const LEN: usize = 20;
    }
    /// BSD loopback (LINKTYPE_NULL host order, LINKTYPE_LOOP network order).
    pub mod null {
        pub const FAMILY: super::Field = 0..4;
        pub const LEN: usize = 4;
    }
    /// PPP (RFC 1661), optionally in HDLC-like framing (RFC 1662: address 0xff, control
    /// 0x03); the protocol field is one byte when its first byte is odd (RFC 1661 6.5).
    pub mod ppp {
        pub const ADDRESS_CONTROL: [u8; 2] = [0xff, 0x03];
        pub const IPV4: u16 = 0x0021;
        pub const IPV6: u16 = 0x0057;
        pub const MPLS_UNICAST: u16 = 0x0281;
        pub const MPLS_MULTICAST: u16 = 0x0283;
    }
    /// Cisco HDLC (LINKTYPE_C_HDLC): address, control, ether type.
    pub mod c_hdlc {
        pub const PROTOCOL: super::Field = 2..4;
        pub const LEN: usize = 4;
    }
    /// PPPoE session header (RFC 2516) and the PPP protocol after it.
    pub mod pppoe {
        pub const VERSION_TYPE: usize = 0;
        pub const CODE: usize = 1;
        pub const LEN: usize = 6;
        pub const VERSION_TYPE_1_1: u8 = 0x11;
    }
    /// One MPLS label stack entry (RFC 3032): label (20), TC (3), bottom of stack (1), TTL.
    pub mod mpls {
        pub const BOTTOM_OF_STACK: usize = 2;
        pub const LEN: usize = 4;
    }
    /// NSH base header (RFC 8300): length in 4-byte words is the low 6 bits of byte 1.
    pub mod nsh {
        pub const LENGTH: usize = 1;
        pub const NEXT_PROTOCOL: usize = 3;
        /// Base header and service path header.
        pub const MIN_LEN: usize = 8;
    }
}

/// The ether type a PPP protocol number stands for, and the bytes after the PPP header.
fn ppp(data: &[u8]) -> Result<(u16, &[u8]), SkipReason> {
    use field::ppp::*;
    let data = match data.get(..2) {
        Some(ac) if ac == ADDRESS_CONTROL => &data[2..],
        _ => data,
    };
    let first = *data.first().ok_or(SkipReason::TruncatedLinkHeader)?;
    let (protocol, rest) = if first & 1 == 1 {
        (u16::from(first), &data[1..])
    } else {
        let p = be16(data, 0..2).ok_or(SkipReason::TruncatedLinkHeader)?;
        (p, &data[2..])
    };
    let ether = match protocol {
        IPV4 => ether_type::IPV4,
        IPV6 => ether_type::IPV6,
        MPLS_UNICAST => ether_type::MPLS_UNICAST,
        MPLS_MULTICAST => ether_type::MPLS_MULTICAST,
        _ => return Err(SkipReason::NotIp),
    };
    Ok((ether, rest))
}

/// The bytes after an MPLS label stack; the first nibble says which IP version follows.
fn mpls(mut data: &[u8]) -> Result<&[u8], SkipReason> {
    use field::mpls::*;
    loop {
        let entry = data.get(..LEN).ok_or(SkipReason::TruncatedLinkHeader)?;
        data = &data[LEN..];
        if entry[BOTTOM_OF_STACK] & 1 == 1 {
            return Ok(data);
        }
    }
}

/// The ether type after an LLC/SNAP header with the zero OUI, and the bytes after it.
pub(super) fn llc_snap_ether_type(data: &[u8]) -> Option<(u16, &[u8])> {
    use field::llc_snap;
    let snap = data.get(..llc_snap::LEN)?;
    if snap[..3] != llc_snap::DSAP_SSAP_CONTROL || snap[llc_snap::OUI] != [0, 0, 0] {
        return None;
    }
    Some((be16(snap, llc_snap::ETHER_TYPE)?, &data[llc_snap::LEN..]))
}

/// BSD address families found in loopback headers.
mod address_family {
    pub const INET: u32 = 2;
    /// AF_INET6 on NetBSD/OpenBSD, FreeBSD/DragonFly, and Darwin.
    pub const INET6: [u32; 3] = [24, 28, 30];
}

fn be16(data: &[u8], at: core::ops::Range<usize>) -> Option<u16> {
    let b = data.get(at)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Strips the link header of a frame of the given LINKTYPE.
pub(super) fn strip(link: u32, data: &[u8], links: Links) -> Result<LinkPayload<'_>, SkipReason> {
    use field::*;
    let raw = |version| {
        Ok(LinkPayload {
            ip: data,
            version,
            vlan_tagged: false,
        })
    };
    match link {
        linktype::ETHERNET => {
            let ether = be16(data, ethernet::ETHER_TYPE).ok_or(SkipReason::TruncatedLinkHeader)?;
            by_ether_type(ether, &data[ethernet::LEN..], links)
        }
        linktype::LINUX_SLL => {
            let proto = be16(data, sll::PROTOCOL).ok_or(SkipReason::TruncatedLinkHeader)?;
            by_ether_type(proto, &data[sll::LEN..], links)
        }
        linktype::LINUX_SLL2 => {
            if data.len() < sll2::LEN {
                return Err(SkipReason::TruncatedLinkHeader);
            }
            let proto = be16(data, sll2::PROTOCOL).ok_or(SkipReason::TruncatedLinkHeader)?;
            by_ether_type(proto, &data[sll2::LEN..], links)
        }
        linktype::PPP | linktype::PPP_HDLC if links == Links::Native => {
            let (ether, rest) = ppp(data)?;
            by_ether_type(ether, rest, links)
        }
        linktype::C_HDLC if links == Links::Native => {
            let proto = be16(data, c_hdlc::PROTOCOL).ok_or(SkipReason::TruncatedLinkHeader)?;
            by_ether_type(proto, &data[c_hdlc::LEN..], links)
        }
        linktype::RAW => raw(IpVersion::Either),
        linktype::IPV4 => raw(IpVersion::V4),
        linktype::IPV6 => raw(IpVersion::V6),
        linktype::NULL | linktype::LOOP => {
            let b: [u8; 4] = data
                .get(null::FAMILY)
                .and_then(|b| b.try_into().ok())
                .ok_or(SkipReason::TruncatedLinkHeader)?;
            let family = if link == linktype::LOOP {
                u32::from_be_bytes(b)
            } else {
                // Host order of the capturing machine, which the file does not record:
                // families are small numbers, so a value above 0xffff is byte-swapped.
                let le = u32::from_le_bytes(b);
                if le > 0xffff {
                    le.swap_bytes()
                } else {
                    le
                }
            };
            let version = match family {
                address_family::INET => IpVersion::V4,
                f if address_family::INET6.contains(&f) => IpVersion::V6,
                _ => return Err(SkipReason::NotIp),
            };
            Ok(LinkPayload {
                ip: &data[null::LEN..],
                version,
                vlan_tagged: false,
            })
        }
        _ => Err(SkipReason::UnsupportedLinkType),
    }
}

/// Follows an ether type through any number of VLAN tags to IPv4/IPv6 (native mode: also
/// through PPPoE sessions, PPP, NSH, Ethernet frames and MPLS label stacks; each step
/// consumes bytes, so the walk ends).
pub(super) fn by_ether_type(
    mut ether: u16,
    mut rest: &[u8],
    links: Links,
) -> Result<LinkPayload<'_>, SkipReason> {
    let mut vlan_tagged = false;
    let native = links == Links::Native;
    loop {
        let version = match ether {
            ether_type::IPV4 => IpVersion::V4,
            ether_type::IPV6 => IpVersion::V6,
            len if len <= ether_type::MAX_8023_LENGTH => {
                // 802.3 frame: only LLC/SNAP with the zero OUI carries an ether type.
                (ether, rest) = llc_snap_ether_type(rest).ok_or(SkipReason::NotIp)?;
                if ether <= ether_type::MAX_8023_LENGTH {
                    return Err(SkipReason::NotIp);
                }
                continue;
            }
            ether_type::VLAN | ether_type::PROVIDER_BRIDGING | ether_type::QINQ_LEGACY => {
                ether = be16(rest, field::vlan_tag::INNER_ETHER_TYPE)
                    .ok_or(SkipReason::TruncatedLinkHeader)?;
                rest = &rest[field::vlan_tag::LEN..];
                vlan_tagged = true;
                continue;
            }
            ether_type::PPPOE_SESSION if native => {
                use field::pppoe;
                let h = rest
                    .get(..pppoe::LEN)
                    .ok_or(SkipReason::TruncatedLinkHeader)?;
                if h[pppoe::VERSION_TYPE] != pppoe::VERSION_TYPE_1_1 || h[pppoe::CODE] != 0 {
                    return Err(SkipReason::NotIp);
                }
                (ether, rest) = ppp(&rest[pppoe::LEN..])?;
                continue;
            }
            ether_type::PPP if native => {
                (ether, rest) = ppp(rest)?;
                continue;
            }
            ether_type::TRANSPARENT_ETHERNET if native => {
                ether = be16(rest, field::ethernet::ETHER_TYPE)
                    .ok_or(SkipReason::TruncatedLinkHeader)?;
                rest = &rest[field::ethernet::LEN..];
                continue;
            }
            ether_type::NSH if native => {
                use field::nsh;
                let len = usize::from(*rest.get(nsh::LENGTH).unwrap_or(&0) & 0x3f) * 4;
                if len < nsh::MIN_LEN {
                    return Err(SkipReason::TruncatedLinkHeader);
                }
                let next = *rest.get(nsh::NEXT_PROTOCOL).unwrap_or(&0);
                rest = rest.get(len..).ok_or(SkipReason::TruncatedLinkHeader)?;
                ether = super::tunnel::next_protocol_ether_type(next).ok_or(SkipReason::NotIp)?;
                continue;
            }
            ether_type::MPLS_UNICAST | ether_type::MPLS_MULTICAST if native => {
                rest = mpls(rest)?;
                // What follows the stack is not labelled: IPv4 and IPv6 by their first
                // nibble (pseudowires with a control word are not decoded).
                match rest.first().map(|b| b >> 4) {
                    Some(4 | 6) => IpVersion::Either,
                    Some(_) => return Err(SkipReason::NotIp),
                    None => return Err(SkipReason::TruncatedIp),
                }
            }
            _ => return Err(SkipReason::NotIp),
        };
        return Ok(LinkPayload {
            ip: rest,
            version,
            vlan_tagged,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_qinq_is_followed() {
        // Ethernet header, 802.1ad tag (vid 100), 802.1Q tag (vid 200), IPv4.
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[
            0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x08, 0x00, 0x45,
        ]);
        let p = strip(linktype::ETHERNET, &f, Links::Netfound).unwrap();
        assert_eq!(p.version, IpVersion::V4);
        assert!(p.vlan_tagged);
        assert_eq!(p.ip, &[0x45]);
    }

    #[test]
    fn truncated_and_foreign_frames() {
        assert_eq!(
            strip(linktype::ETHERNET, &[0; 13], Links::Netfound),
            Err(SkipReason::TruncatedLinkHeader)
        );
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        assert_eq!(
            strip(linktype::ETHERNET, &arp, Links::Netfound),
            Err(SkipReason::NotIp)
        );
        let mut tag_cut = vec![0u8; 12];
        tag_cut.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(
            strip(linktype::ETHERNET, &tag_cut, Links::Netfound),
            Err(SkipReason::TruncatedLinkHeader)
        );
        assert_eq!(
            strip(147, &[0; 40], Links::Netfound),
            Err(SkipReason::UnsupportedLinkType)
        );
        assert_eq!(
            strip(linktype::LINUX_SLL2, &[0; 19], Links::Netfound),
            Err(SkipReason::TruncatedLinkHeader)
        );
    }

    // zeek snap-tcp.pcap frame 1: an 802.3 frame (length 0x30) with LLC/SNAP carrying IPv4.
    #[test]
    fn llc_snap_is_followed() {
        let f = [
            0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0x30,
            0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00,
        ];
        let p = strip(linktype::ETHERNET, &f, Links::Netfound).unwrap();
        assert_eq!(p.version, IpVersion::V4);
        assert_eq!(p.ip, &[0x45, 0x00]);
        let mut stp = f;
        stp[14] = 0x42; // spanning tree LLC, no SNAP
        assert_eq!(
            strip(linktype::ETHERNET, &stp, Links::Netfound),
            Err(SkipReason::NotIp)
        );
    }

    #[test]
    fn loopback_families_in_either_byte_order() {
        let le = [2, 0, 0, 0, 0x45];
        let be = [0, 0, 0, 2, 0x45];
        let v6 = [0, 0, 0, 30, 0x60];
        assert_eq!(
            strip(linktype::NULL, &le, Links::Netfound).unwrap().version,
            IpVersion::V4
        );
        assert_eq!(
            strip(linktype::NULL, &be, Links::Netfound).unwrap().version,
            IpVersion::V4
        );
        assert_eq!(
            strip(linktype::LOOP, &be, Links::Netfound).unwrap().version,
            IpVersion::V4
        );
        assert_eq!(
            strip(linktype::LOOP, &v6, Links::Netfound).unwrap().version,
            IpVersion::V6
        );
        assert_eq!(
            strip(linktype::LOOP, &le, Links::Netfound),
            Err(SkipReason::NotIp)
        );
    }

    mod native {
        use super::super::super::{decode, linktype, DecodeOptions, DecodedPacket, SkipReason};
        use std::net::{IpAddr, Ipv4Addr};

        // HDLC.pcap frame 7 (first 60 bytes): Cisco HDLC, IPv4, ICMP echo
        const HDLC_ICMP: [u8; 60] = [
            0x0f, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0xff, 0x01,
            0xa7, 0x96, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0x32, 0x0b,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x4c, 0x3c, 0xab, 0xcd,
            0xab, 0xcd, 0xab, 0xcd, 0xab, 0xcd, 0xab, 0xcd, 0xab, 0xcd, 0xab, 0xcd, 0xab, 0xcd,
            0xab, 0xcd, 0xab, 0xcd,
        ];
        // mpls-traceroute.pcap frame 1: PPP (ff 03), MPLS (one label), IPv4, UDP
        const PPP_MPLS_UDP: [u8; 48] = [
            0xff, 0x03, 0x02, 0x81, 0x18, 0x96, 0x01, 0x01, 0x45, 0x00, 0x00, 0x28, 0xa5, 0x4c,
            0x00, 0x00, 0x01, 0x11, 0xf7, 0x6f, 0x0c, 0x04, 0x04, 0x04, 0x0c, 0x01, 0x01, 0x01,
            0xa5, 0x4b, 0x82, 0x9b, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        // pppoes.pcap frame 1: PPPoE session carrying PPP LCP
        const PPPOE_LCP: [u8; 34] = [
            0x00, 0x02, 0x18, 0x03, 0x00, 0x07, 0x00, 0x04, 0x23, 0xa9, 0x5d, 0x8e, 0x88, 0x64,
            0x11, 0x00, 0x00, 0x17, 0x00, 0x0e, 0xc0, 0x21, 0x09, 0x6a, 0x00, 0x0c, 0xa4, 0xcb,
            0xea, 0x34, 0x0e, 0xe2, 0xf6, 0x09,
        ];
        // ppp_ip_udp_dns.pcap frame 1 (first 40 bytes): PPP with control byte 0x5f and protocol 0x7e08 (damaged)
        const PPP_DAMAGED: [u8; 40] = [
            0xff, 0x5f, 0x7e, 0x08, 0x00, 0x45, 0x00, 0xc1, 0x21, 0x00, 0x01, 0x00, 0x00, 0x40,
            0x11, 0x45, 0xee, 0x45, 0xa8, 0xb2, 0xf8, 0xc0, 0xa8, 0x00, 0x6f, 0x00, 0x35, 0x04,
            0x00, 0x00, 0x32, 0x33, 0xea, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        // nsh.pcap frame 1: Ethernet, NSH (MD type 1), IPv4, UDP
        const NSH_ETHER_UDP: [u8; 72] = [
            0x52, 0x54, 0x00, 0x4b, 0x73, 0x5f, 0x02, 0x42, 0x0a, 0x00, 0x08, 0x03, 0x89, 0x4f,
            0x00, 0x06, 0x01, 0x01, 0x00, 0x03, 0x09, 0x07, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x45, 0x00, 0x00, 0x22,
            0x28, 0x44, 0x40, 0x00, 0x40, 0x11, 0xe9, 0x6a, 0x0a, 0x00, 0x08, 0x03, 0x0a, 0x0d,
            0x0d, 0x0d, 0xcc, 0x05, 0x1f, 0x40, 0x00, 0x0e, 0x00, 0x00, 0x62, 0x65, 0x67, 0x69,
            0x6e, 0x0a,
        ];

        fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        fn run(lt: u32, f: &[u8], opts: DecodeOptions) -> Result<DecodedPacket, SkipReason> {
            decode(lt, f, 0, f.len() as u32, &opts)
        }
        /// Native mode decodes it, the same with tunnels inner or outer; netFound mode does
        /// not (its golden outputs were made without these link layers).
        fn native_only(lt: u32, f: &[u8], netfound: SkipReason) -> DecodedPacket {
            let p = run(lt, f, DecodeOptions::INNER).unwrap();
            assert_eq!(run(lt, f, DecodeOptions::OUTER), Ok(p));
            assert_eq!(run(lt, f, DecodeOptions::NETFOUND), Err(netfound));
            for n in 0..f.len() {
                for opts in [DecodeOptions::INNER, DecodeOptions::NETFOUND] {
                    let _ = run(lt, &f[..n], opts);
                }
            }
            p
        }

        #[test]
        fn cisco_hdlc() {
            let p = native_only(
                linktype::C_HDLC,
                &HDLC_ICMP,
                SkipReason::UnsupportedLinkType,
            );
            assert_eq!(
                (p.src, p.dst, p.protocol),
                (v4(10, 0, 0, 1), v4(10, 0, 0, 2), 1)
            );
            assert_eq!(p.tunnel.depth, 0);
        }

        #[test]
        fn ppp_with_an_mpls_label() {
            let p = native_only(
                linktype::PPP,
                &PPP_MPLS_UDP,
                SkipReason::UnsupportedLinkType,
            );
            assert_eq!(
                (p.src, p.dst, p.protocol, p.src_port, p.dst_port),
                (v4(12, 4, 4, 4), v4(12, 1, 1, 1), 17, 42315, 33435)
            );
            // The same frame as LINKTYPE_PPP_HDLC.
            assert_eq!(
                run(linktype::PPP_HDLC, &PPP_MPLS_UDP, DecodeOptions::INNER),
                Ok(p)
            );
            // A label stack cut before its bottom entry.
            assert_eq!(
                run(linktype::PPP, &PPP_MPLS_UDP[..6], DecodeOptions::INNER),
                Err(SkipReason::TruncatedLinkHeader)
            );
            // tcpdump's damaged PPP frame (control 0x5f, protocol 0x7e08) is not IP.
            assert_eq!(
                run(linktype::PPP_HDLC, &PPP_DAMAGED, DecodeOptions::INNER),
                Err(SkipReason::NotIp)
            );
        }

        #[test]
        fn pppoe_session() {
            // tcpdump's pppoes.pcap carries LCP: not IP, in every mode.
            for opts in [DecodeOptions::INNER, DecodeOptions::NETFOUND] {
                assert_eq!(
                    run(linktype::ETHERNET, &PPPOE_LCP, opts),
                    Err(SkipReason::NotIp)
                );
            }
            // Its Ethernet and PPPoE headers with PPP protocol IPv4 and the IPv4 packet of
            // HDLC_ICMP (PPPoE's length field is not checked against the payload).
            let mut f = PPPOE_LCP[..20].to_vec();
            f.extend_from_slice(&[0x00, 0x21]);
            f.extend_from_slice(&HDLC_ICMP[4..]);
            let p = native_only(linktype::ETHERNET, &f, SkipReason::NotIp);
            assert_eq!((p.src, p.protocol), (v4(10, 0, 0, 1), 1));
        }

        #[test]
        fn nsh_over_ethernet() {
            let p = native_only(linktype::ETHERNET, &NSH_ETHER_UDP, SkipReason::NotIp);
            assert_eq!(
                (p.src, p.dst, p.protocol, p.src_port, p.dst_port),
                (v4(10, 0, 8, 3), v4(10, 13, 13, 13), 17, 52229, 8000)
            );
            // An NSH length below its fixed headers is refused, not looped on.
            let mut zero = NSH_ETHER_UDP;
            zero[15] = 0;
            assert_eq!(
                run(linktype::ETHERNET, &zero, DecodeOptions::INNER),
                Err(SkipReason::TruncatedLinkHeader)
            );
        }
    }
}

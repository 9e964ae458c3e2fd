//! Link layers: strip the link header of a frame and say which IP version follows.
//!
//! Each header is a handful of fixed offsets, named once in a `field` module; VLAN tags
//! (802.1Q, 802.1ad and the pre-standard 0x9100 QinQ) are skipped however many there are,
//! and 802.3 frames with LLC/SNAP encapsulation are followed to their ether type (as
//! tshark does; netFound's PcapPlusPlus filter drops them).

use super::{linktype, SkipReason};

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
pub(super) fn strip(link: u32, data: &[u8]) -> Result<LinkPayload<'_>, SkipReason> {
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
            by_ether_type(ether, &data[ethernet::LEN..])
        }
        linktype::LINUX_SLL => {
            let proto = be16(data, sll::PROTOCOL).ok_or(SkipReason::TruncatedLinkHeader)?;
            by_ether_type(proto, &data[sll::LEN..])
        }
        linktype::LINUX_SLL2 => {
            if data.len() < sll2::LEN {
                return Err(SkipReason::TruncatedLinkHeader);
            }
            let proto = be16(data, sll2::PROTOCOL).ok_or(SkipReason::TruncatedLinkHeader)?;
            by_ether_type(proto, &data[sll2::LEN..])
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

/// Follows an ether type through any number of VLAN tags to IPv4/IPv6.
fn by_ether_type(mut ether: u16, mut rest: &[u8]) -> Result<LinkPayload<'_>, SkipReason> {
    let mut vlan_tagged = false;
    loop {
        let version = match ether {
            ether_type::IPV4 => IpVersion::V4,
            ether_type::IPV6 => IpVersion::V6,
            len if len <= ether_type::MAX_8023_LENGTH => {
                // 802.3 frame: only LLC/SNAP with the zero OUI carries an ether type.
                use field::llc_snap;
                let snap = rest.get(..llc_snap::LEN).ok_or(SkipReason::NotIp)?;
                if snap[..3] != llc_snap::DSAP_SSAP_CONTROL || snap[llc_snap::OUI] != [0, 0, 0] {
                    return Err(SkipReason::NotIp);
                }
                ether = be16(snap, llc_snap::ETHER_TYPE).ok_or(SkipReason::NotIp)?;
                rest = &rest[llc_snap::LEN..];
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
        let p = strip(linktype::ETHERNET, &f).unwrap();
        assert_eq!(p.version, IpVersion::V4);
        assert!(p.vlan_tagged);
        assert_eq!(p.ip, &[0x45]);
    }

    #[test]
    fn truncated_and_foreign_frames() {
        assert_eq!(
            strip(linktype::ETHERNET, &[0; 13]),
            Err(SkipReason::TruncatedLinkHeader)
        );
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        assert_eq!(strip(linktype::ETHERNET, &arp), Err(SkipReason::NotIp));
        let mut tag_cut = vec![0u8; 12];
        tag_cut.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(
            strip(linktype::ETHERNET, &tag_cut),
            Err(SkipReason::TruncatedLinkHeader)
        );
        assert_eq!(strip(147, &[0; 40]), Err(SkipReason::UnsupportedLinkType));
        assert_eq!(
            strip(linktype::LINUX_SLL2, &[0; 19]),
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
        let p = strip(linktype::ETHERNET, &f).unwrap();
        assert_eq!(p.version, IpVersion::V4);
        assert_eq!(p.ip, &[0x45, 0x00]);
        let mut stp = f;
        stp[14] = 0x42; // spanning tree LLC, no SNAP
        assert_eq!(strip(linktype::ETHERNET, &stp), Err(SkipReason::NotIp));
    }

    #[test]
    fn loopback_families_in_either_byte_order() {
        let le = [2, 0, 0, 0, 0x45];
        let be = [0, 0, 0, 2, 0x45];
        let v6 = [0, 0, 0, 30, 0x60];
        assert_eq!(strip(linktype::NULL, &le).unwrap().version, IpVersion::V4);
        assert_eq!(strip(linktype::NULL, &be).unwrap().version, IpVersion::V4);
        assert_eq!(strip(linktype::LOOP, &be).unwrap().version, IpVersion::V4);
        assert_eq!(strip(linktype::LOOP, &v6).unwrap().version, IpVersion::V6);
        assert_eq!(strip(linktype::LOOP, &le), Err(SkipReason::NotIp));
    }
}

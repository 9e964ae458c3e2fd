//! Which side of a flow is "forward".
//!
//! Two rules:
//!
//! - [`NetfoundDirection`]: netFound's rule, bug for bug. `Tokenize.py` collects
//!   `set(SrcIP) | set(DstIP)` over the flow's packets (addresses as 32-bit integers; IPv6
//!   addresses reduced to their first 32 bits), drops the flow if that set has more than two
//!   elements, and takes as forward the *first internal address in Python's set iteration
//!   order*, else the source of the earliest packet. Python's set order is not insertion
//!   order: it is the slot order of CPython's hash table (an int hashes to itself, a new
//!   set has 8 slots, collisions probe with CPython's perturbation scheme), so this module
//!   emulates that table exactly for the small sets that matter.
//! - [`native_forward_is_first_src`]: netfm's own rule on full addresses: forward is the
//!   endpoint inside the internal networks (source first), else the first packet's source.
//!
//! [`InternalNetworks`] holds the configured CIDRs (IPv4 and IPv6). netFound's default
//! configuration uses `["127.0.0.0/8", "169.231.0.0/16"]`; in netFound mode only IPv4
//! ranges apply (netFound compares them against the 32-bit values, so an IPv6 flow is
//! "internal" only if its first 32 bits happen to fall in an IPv4 range, as in netFound).

use std::net::IpAddr;
use thiserror::Error;

/// netFound's default `internalIPs`.
pub const NETFOUND_INTERNAL_NETWORKS: [&str; 2] = ["127.0.0.0/8", "169.231.0.0/16"];

/// A CIDR string that could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CidrError {
    #[error("invalid network {0:?}: expected ADDRESS/PREFIX, e.g. 10.0.0.0/8 or fd00::/8")]
    Syntax(String),
    #[error("invalid network {0:?}: prefix length {1} is longer than the address")]
    Prefix(String, u32),
}

/// One network in CIDR notation. A bare address means a single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Syntax(s.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u32>()
                .map_err(|_| CidrError::Syntax(s.to_string()))?,
        };
        if prefix > max {
            return Err(CidrError::Prefix(s.to_string(), prefix));
        }
        Ok(Cidr {
            addr,
            prefix: prefix as u8,
        })
    }

    /// Whether `ip` is inside this network (an IPv4 network never contains an IPv6 address
    /// and vice versa).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq_u32(u32::from(net), u32::from(ip), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let p = u32::from(self.prefix);
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                (u128::from(net) ^ u128::from(ip)) & mask == 0
            }
            _ => false,
        }
    }

    /// netFound's test on a 32-bit address value: the first `prefix` bits equal. Only IPv4
    /// networks apply.
    pub fn contains_u32(&self, ip: u32) -> bool {
        match self.addr {
            IpAddr::V4(net) => prefix_eq_u32(u32::from(net), ip, self.prefix),
            IpAddr::V6(_) => false,
        }
    }
}

fn prefix_eq_u32(a: u32, b: u32, prefix: u8) -> bool {
    let p = u32::from(prefix);
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    (a ^ b) & mask == 0
}

/// The configured internal networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalNetworks {
    nets: Vec<Cidr>,
}

impl Default for InternalNetworks {
    fn default() -> Self {
        Self::netfound_default()
    }
}

impl InternalNetworks {
    /// netFound's default configuration.
    pub fn netfound_default() -> Self {
        let nets = NETFOUND_INTERNAL_NETWORKS
            .iter()
            .filter_map(|s| Cidr::parse(s).ok())
            .collect();
        InternalNetworks { nets }
    }

    pub fn new(nets: Vec<Cidr>) -> Self {
        InternalNetworks { nets }
    }

    /// Parses a list of CIDR strings.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, CidrError> {
        let nets = list
            .iter()
            .map(|s| Cidr::parse(s.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(InternalNetworks { nets })
    }

    pub fn networks(&self) -> &[Cidr] {
        &self.nets
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// netFound's `is_internal_ip` on a 32-bit value.
    pub fn contains_u32(&self, ip: u32) -> bool {
        self.nets.iter().any(|n| n.contains_u32(ip))
    }
}

/// The 32-bit value netFound's stage 3 writes for an address: IPv4 as a big-endian
/// integer, IPv6 reduced to its first 32 bits.
pub fn netfound_ip32(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            u32::from_be_bytes([o[0], o[1], o[2], o[3]])
        }
    }
}

/// netfm's native rule: is the first packet's source the forward side? Yes if it is
/// internal, or if neither endpoint is; no if only the destination is internal.
pub fn native_forward_is_first_src(
    first_src: IpAddr,
    first_dst: IpAddr,
    internal: &InternalNetworks,
) -> bool {
    internal.contains(first_src) || !internal.contains(first_dst)
}

/// CPython's set hash table, for a handful of non-negative ints below 2^61 - 1 (whose hash is
/// the value itself). Tables stay at CPython's minimum size of 8 slots as long as at most 4
/// keys were inserted (CPython resizes when `fill * 5 >= mask * 3`); more is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PySetTable {
    slots: [Option<u32>; 8],
    used: usize,
}

const PERTURB_SHIFT: u32 = 5;

impl PySetTable {
    /// `set_add_entry` for a key not known to be present. Returns false if the table would
    /// have to grow (never the case for the sets netFound keeps).
    fn add(&mut self, key: u32) -> bool {
        let mask: u64 = 7;
        let hash = u64::from(key);
        let mut perturb = hash;
        let mut i = hash & mask;
        // LINEAR_PROBES (9) never applies to an 8-slot table (i + 9 > mask), so each step
        // looks at one slot and then perturbs.
        loop {
            match self.slots[i as usize] {
                None => break,
                Some(k) if k == key => return true,
                Some(_) => {
                    perturb >>= PERTURB_SHIFT;
                    i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb)) & mask;
                }
            }
        }
        if self.used >= 4 {
            return false;
        }
        self.slots[i as usize] = Some(key);
        self.used += 1;
        true
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().flatten().copied()
    }
}

/// Iteration order of `set(src_in_order) | set(dst_in_order)` in CPython, for inputs of
/// at most 2 distinct values each. `src_in_order`/`dst_in_order` are the distinct values
/// in order of first appearance. None if a table would have to grow (more than 4 keys).
pub fn python_set_union_order(src_in_order: &[u32], dst_in_order: &[u32]) -> Option<Vec<u32>> {
    let mut src = PySetTable::default();
    for &k in src_in_order {
        if !src.add(k) {
            return None;
        }
    }
    let mut dst = PySetTable::default();
    for &k in dst_in_order {
        if !dst.add(k) {
            return None;
        }
    }
    // set.union: copy of the left set (same slots: empty target, same size, no dummies),
    // then the right set's keys inserted in the right set's slot order.
    let mut union = src;
    for k in dst.iter() {
        if !union.add(k) {
            return None;
        }
    }
    Some(union.iter().collect())
}

/// Where a packet sorts in netFound's stable timestamp sort: (timestamp, arrival index).
pub type SortKey = (u64, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IpSeen {
    ip: u32,
    first_as_src: Option<SortKey>,
    first_as_dst: Option<SortKey>,
}

/// Why netFound drops a flow in its direction step.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum DirectionError {
    #[error("the flow has more than two distinct IP addresses (netFound drops it)")]
    MoreThanTwoIps,
    #[error("the flow has no packets")]
    Empty,
}

/// Streaming netFound direction rule: observe every packet of the flow (any order), then
/// [`resolve`](Self::resolve) the forward address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetfoundDirection {
    ips: [Option<IpSeen>; 2],
    more_than_two: bool,
    earliest: Option<(SortKey, u32)>,
}

fn min_key(a: Option<SortKey>, b: SortKey) -> Option<SortKey> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl NetfoundDirection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one packet: its sort key and its 32-bit source and destination values.
    pub fn observe(&mut self, key: SortKey, src: u32, dst: u32) {
        if self.earliest.is_none_or(|(k, _)| key < k) {
            self.earliest = Some((key, src));
        }
        if self.more_than_two {
            return;
        }
        for (ip, as_src) in [(src, true), (dst, false)] {
            let slot = self.ips.iter_mut().find(|s| s.is_none_or(|s| s.ip == ip));
            match slot {
                Some(slot) => {
                    let seen = slot.get_or_insert(IpSeen {
                        ip,
                        first_as_src: None,
                        first_as_dst: None,
                    });
                    if as_src {
                        seen.first_as_src = min_key(seen.first_as_src, key);
                    } else {
                        seen.first_as_dst = min_key(seen.first_as_dst, key);
                    }
                }
                None => self.more_than_two = true,
            }
        }
    }

    /// True once a third distinct address was seen.
    pub fn has_more_than_two_ips(&self) -> bool {
        self.more_than_two
    }

    /// The forward 32-bit address, as netFound chooses it.
    pub fn resolve(&self, internal: &InternalNetworks) -> Result<u32, DirectionError> {
        if self.more_than_two {
            return Err(DirectionError::MoreThanTwoIps);
        }
        let Some((_, earliest_src)) = self.earliest else {
            return Err(DirectionError::Empty);
        };
        let seen: Vec<IpSeen> = self.ips.iter().flatten().copied().collect();
        let ordered = |pick: fn(&IpSeen) -> Option<SortKey>| {
            let mut v: Vec<(SortKey, u32)> = seen
                .iter()
                .filter_map(|s| pick(s).map(|k| (k, s.ip)))
                .collect();
            v.sort();
            v.into_iter().map(|(_, ip)| ip).collect::<Vec<u32>>()
        };
        let src = ordered(|s| s.first_as_src);
        let dst = ordered(|s| s.first_as_dst);
        let order = python_set_union_order(&src, &dst).ok_or(DirectionError::MoreThanTwoIps)?;
        Ok(order
            .into_iter()
            .find(|&ip| internal.contains_u32(ip))
            .unwrap_or(earliest_src))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn cidr_matching_v4_v6() {
        let nets = InternalNetworks::parse(&["10.0.0.0/8", "fd00::/8", "192.168.1.7"]).unwrap();
        assert!(nets.contains("10.1.2.3".parse().unwrap()));
        assert!(!nets.contains("11.0.0.1".parse().unwrap()));
        assert!(nets.contains("fd12::1".parse().unwrap()));
        assert!(!nets.contains("fe80::1".parse().unwrap()));
        assert!(nets.contains("192.168.1.7".parse().unwrap()));
        assert!(!nets.contains("192.168.1.8".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn ip32_takes_first_32_bits_of_v6() {
        let ip: IpAddr = "2001:470:e5bf:dead::1".parse().unwrap();
        assert_eq!(netfound_ip32(ip), 0x2001_0470);
        assert_eq!(netfound_ip32("1.2.3.4".parse().unwrap()), 0x0102_0304);
    }

    // Orders checked against CPython 3.11: list(set([a]) | set([b])) etc.
    #[test]
    fn python_set_order() {
        // Different slots: slot order (value & 7), whatever the insertion order.
        assert_eq!(python_set_union_order(&[9], &[2]), Some(vec![9, 2])); // slots 1, 2
        assert_eq!(python_set_union_order(&[2], &[9]), Some(vec![9, 2]));
        // Same slot (both & 7 == 1): first inserted keeps slot 1, the other probes.
        // 17: perturb = 17 >> 5 = 0, i = 1*5+1+0 = 6.
        assert_eq!(python_set_union_order(&[1], &[17]), Some(vec![1, 17]));
        assert_eq!(python_set_union_order(&[17], &[1]), Some(vec![17, 1]));
        // 1 collides with 17 at slot 1: perturb = 1 >> 5 = 0 -> slot 6.
        assert_eq!(
            python_set_union_order(&[17, 1], &[1, 17]),
            Some(vec![17, 1])
        );
        // Large colliding values (perturbation matters), from CPython 3.11:
        // list(set(src) | set(dst)).
        let vectors: [(&[u32], &[u32], [u32; 2]); 12] = [
            (
                &[3280387012, 1092539324],
                &[3280387012],
                [1092539324, 3280387012],
            ),
            (
                &[901749037, 3430400045],
                &[901749037],
                [3430400045, 901749037],
            ),
            (
                &[119846733],
                &[119846733, 1912923437],
                [1912923437, 119846733],
            ),
            (
                &[1363349907, 1513020499],
                &[1363349907],
                [1513020499, 1363349907],
            ),
            (&[1302286209], &[1001090105], [1302286209, 1001090105]),
            (
                &[4089858807, 4173789215],
                &[4089858807],
                [4173789215, 4089858807],
            ),
            (
                &[429497919, 2388256095],
                &[2388256095, 429497919],
                [2388256095, 429497919],
            ),
            (
                &[2878940490, 818559858],
                &[2878940490],
                [2878940490, 818559858],
            ),
            (
                &[3664843848, 798055216],
                &[3664843848],
                [3664843848, 798055216],
            ),
            (
                &[743061144, 2475894144],
                &[743061144],
                [743061144, 2475894144],
            ),
            (
                &[3607564414, 1790064078],
                &[1790064078, 3607564414],
                [1790064078, 3607564414],
            ),
            (
                &[3265535596],
                &[3265535596, 186776492],
                [186776492, 3265535596],
            ),
        ];
        for (src, dst, want) in vectors {
            assert_eq!(
                python_set_union_order(src, dst),
                Some(want.to_vec()),
                "{src:?} | {dst:?}"
            );
        }
    }

    #[test]
    fn netfound_direction_prefers_internal_then_earliest_src() {
        let internal = InternalNetworks::netfound_default();
        let ext_a = v4(10, 0, 0, 1);
        let ext_b = v4(10, 0, 0, 2);
        let lo = v4(127, 0, 0, 1);

        let mut d = NetfoundDirection::new();
        d.observe((5, 0), ext_b, ext_a);
        d.observe((3, 1), ext_a, ext_b);
        assert_eq!(d.resolve(&internal), Ok(ext_a)); // earliest packet's source

        let mut d = NetfoundDirection::new();
        d.observe((1, 0), ext_a, lo);
        assert_eq!(d.resolve(&internal), Ok(lo)); // internal, even as destination only

        let mut d = NetfoundDirection::new();
        d.observe((1, 0), ext_a, ext_b);
        d.observe((2, 1), ext_a, lo);
        assert_eq!(d.resolve(&internal), Err(DirectionError::MoreThanTwoIps));
    }

    #[test]
    fn both_internal_uses_set_slot_order() {
        let internal = InternalNetworks::netfound_default();
        let a = v4(127, 0, 0, 2); // slot 2
        let b = v4(127, 0, 0, 1); // slot 1
        let mut d = NetfoundDirection::new();
        d.observe((1, 0), a, b);
        // set order: 127.0.0.1 (slot 1) before 127.0.0.2 (slot 2).
        assert_eq!(d.resolve(&internal), Ok(b));
    }

    #[test]
    fn native_rule() {
        let internal = InternalNetworks::parse(&["10.0.0.0/8"]).unwrap();
        let i: IpAddr = "10.0.0.5".parse().unwrap();
        let e: IpAddr = "8.8.8.8".parse().unwrap();
        assert!(native_forward_is_first_src(i, e, &internal));
        assert!(!native_forward_is_first_src(e, i, &internal));
        assert!(native_forward_is_first_src(e, e, &internal));
    }
}

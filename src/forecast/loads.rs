//! Link loads from captures (`netfm loads`): bits and packets per interval, through the
//! same capture reader and packet decoder as `tokenize`, grouped by
//!
//! - `direction`: relative to the local networks (`--local`, default the private ranges
//!   10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fe80::/10): `in` (to a local address
//!   from outside), `out`, `internal` (both local) and `external` (neither);
//! - `subnet-pair`: `SRC_NET->DST_NET` at `/prefix4` (IPv4) or `/prefix6` (IPv6);
//! - `file`: the capture file's name.
//!
//! The bits are wire lengths (the frame's original length, headers included) × 8. Frames
//! that are not IP are counted and left out of every series; damaged captures end with a
//! counted warning, as in `tokenize`. Series beyond `max_series` (only subnet pairs can
//! be that many) are summed into one `other` series, and counted, so memory stays bounded by
//! the flags, not by the traffic.

use super::series::Panel;
use crate::capture::{CaptureReader, Input};
use crate::decode::{decode_frame, DecodeOptions};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::net::IpAddr;

/// How packets are grouped into series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Direction,
    SubnetPair,
    File,
}

impl std::str::FromStr for GroupBy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<GroupBy> {
        Ok(match s {
            "direction" => GroupBy::Direction,
            "subnet-pair" => GroupBy::SubnetPair,
            "file" => GroupBy::File,
            _ => bail!("--by is direction, subnet-pair or file, not {s:?}"),
        })
    }
}

/// An address prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::str::FromStr for Prefix {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Prefix> {
        let (a, l) = s
            .split_once('/')
            .with_context(|| format!("{s:?} is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = a
            .parse()
            .with_context(|| format!("{a:?} is not an address"))?;
        let len: u8 = l
            .parse()
            .with_context(|| format!("{l:?} is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            bail!("{s}: a prefix is at most /{max}");
        }
        Ok(Prefix { addr, len })
    }
}

fn bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u32::from(v) as u128, 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

impl Prefix {
    pub fn contains(&self, a: IpAddr) -> bool {
        let ((p, w), (x, wx)) = (bits(self.addr), bits(a));
        if w != wx {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        let shift = w - self.len;
        (p >> shift) == (x >> shift)
    }
}

/// The default local networks.
pub fn private_ranges() -> Vec<Prefix> {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .map(|s| s.parse().expect("a valid prefix"))
    .collect()
}

/// `a` cut to its first `len` bits, as text (`10.1.2.0/24`).
fn network(a: IpAddr, len4: u8, len6: u8) -> String {
    match a {
        IpAddr::V4(v) => {
            let x = u32::from(v);
            let m = if len4 == 0 {
                0
            } else {
                u32::MAX << (32 - len4)
            };
            format!("{}/{len4}", std::net::Ipv4Addr::from(x & m))
        }
        IpAddr::V6(v) => {
            let x = u128::from(v);
            let m = if len6 == 0 {
                0
            } else {
                u128::MAX << (128 - len6)
            };
            format!("{}/{len6}", std::net::Ipv6Addr::from(x & m))
        }
    }
}

/// What `loads` aggregates, and how.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub step: i64,
    pub by: GroupBy,
    pub local: Vec<Prefix>,
    pub prefix4: u8,
    pub prefix6: u8,
    pub max_series: usize,
    /// Most intervals between the first and last packet (bounds memory).
    pub max_intervals: usize,
}

/// Bits per second (`bits`) and packets per second (`packets`) per series, and what was
/// counted on the way.
#[derive(Debug)]
pub struct CaptureLoads {
    pub bits: Panel,
    pub packets: Panel,
    pub frames: u64,
    pub not_ip: u64,
    /// Packets summed into `other` because `max_series` series existed already.
    pub folded: u64,
    pub warnings: Vec<String>,
}

/// Reads every capture and aggregates its packets.
pub fn from_captures(inputs: &[Input], spec: &LoadSpec) -> anyhow::Result<CaptureLoads> {
    if spec.step <= 0 {
        bail!("the interval must be positive");
    }
    // (series, interval) → (bits, packets), intervals relative to the first packet's.
    let mut names: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut cells: HashMap<(usize, i64), (f64, f64)> = HashMap::new();
    let (mut frames, mut not_ip, mut folded) = (0u64, 0u64, 0u64);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut warnings = Vec::new();
    let step_ns = spec.step as i128 * 1_000_000_000;
    for input in inputs {
        let mut reader = CaptureReader::open(input).with_context(|| format!("opening {input}"))?;
        let file = input
            .path()
            .file_name()
            .map_or("-".into(), |n| n.to_string_lossy().to_string());
        while let Some(frame) = reader.next_frame() {
            frames += 1;
            let Ok(p) = decode_frame(&frame, &DecodeOptions::default()) else {
                not_ip += 1;
                continue;
            };
            let key = match spec.by {
                GroupBy::File => file.clone(),
                GroupBy::SubnetPair => format!(
                    "{}->{}",
                    network(p.src, spec.prefix4, spec.prefix6),
                    network(p.dst, spec.prefix4, spec.prefix6)
                ),
                GroupBy::Direction => {
                    let local = |a: IpAddr| spec.local.iter().any(|n| n.contains(a));
                    match (local(p.src), local(p.dst)) {
                        (true, true) => "internal",
                        (true, false) => "out",
                        (false, true) => "in",
                        (false, false) => "external",
                    }
                    .to_string()
                }
            };
            let s = match index.get(&key) {
                Some(&s) => s,
                None if names.len() < spec.max_series => {
                    names.push(key.clone());
                    index.insert(key, names.len() - 1);
                    names.len() - 1
                }
                None => {
                    folded += 1;
                    match index.get("other") {
                        Some(&s) => s,
                        None => {
                            names.push("other".into());
                            index.insert("other".into(), names.len() - 1);
                            names.len() - 1
                        }
                    }
                }
            };
            let interval = (frame.ts_ns as i128 / step_ns) as i64;
            first = first.min(interval);
            last = last.max(interval);
            if (last - first) as usize >= spec.max_intervals {
                bail!(
                    "{input}: the captures span more than {} intervals of {} s; use a longer --interval",
                    spec.max_intervals,
                    spec.step
                );
            }
            let c = cells.entry((s, interval)).or_insert((0.0, 0.0));
            c.0 += frame.orig_len as f64 * 8.0;
            c.1 += 1.0;
        }
        if let Some(w) = reader.warning() {
            warnings.push(w.to_string());
        }
    }
    if names.is_empty() {
        bail!("no IP packets in the captures ({frames} frames, {not_ip} not IP)");
    }
    let n = (last - first + 1) as usize;
    let mut bits = vec![vec![0.0; n]; names.len()];
    let mut pkts = vec![vec![0.0; n]; names.len()];
    for ((s, i), (b, k)) in cells {
        let j = (i - first) as usize;
        bits[s][j] = b / spec.step as f64;
        pkts[s][j] = k / spec.step as f64;
    }
    let start = first * spec.step;
    Ok(CaptureLoads {
        bits: Panel {
            start,
            step: spec.step,
            names: names.clone(),
            values: bits,
        },
        packets: Panel {
            start,
            step: spec.step,
            names,
            values: pkts,
        },
        frames,
        not_ip,
        folded,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_contain_their_addresses() {
        let p: Prefix = "10.0.0.0/8".parse().unwrap();
        assert!(p.contains("10.200.1.1".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let p: Prefix = "fe80::/10".parse().unwrap();
        assert!(p.contains("fe80::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert_eq!(network("10.1.2.3".parse().unwrap(), 24, 64), "10.1.2.0/24");
        assert_eq!(
            network("2001:db8::1".parse().unwrap(), 24, 32),
            "2001:db8::/32"
        );
    }
}

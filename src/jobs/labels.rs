//! Flow labels for fine-tuning: from the dataset's `labels` column (`--labels dir-names`,
//! what `tokenize --label-from-dir` writes) or from a CSV file.
//!
//! A CSV needs a header. Its rows are matched to flows by `flow_id` when it has that column;
//! otherwise by the capture file's name (column `pcap`, `source`, `file` or `capture`; only
//! the last path component counts), the IP protocol (`l4_proto` or `protocol`: a number or
//! a name such as `tcp`) and the unordered endpoint pair (`src_ip`, `src_port`, `dst_ip`,
//! `dst_port`; a port of 0 or empty matches a flow without ports). Addresses are compared
//! as parsed addresses, so `::1` and `0:0::1` are one; an IPv6 address as ndpiReader
//! prints it (RFC 5952, then each `:0:` replaced by `::`, which can leave two `::` and no
//! valid address) also matches. Every flow of a key gets the key's
//! label (netfm may split what a labeller saw as one flow, by timeouts); a key whose rows
//! disagree labels none of its flows (counted as ambiguous). Rows whose label is in
//! `--drop-labels` are dropped (counted); a row with an empty label is dropped too.
//!
//! [`LabelReport`] counts what matched: label rows that match no flow, flows without a
//! label, ambiguous keys; nothing is dropped silently.

use crate::dataset::reader::FlowExample;
use crate::train::data::file_name;
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Splits one CSV record (RFC 4180: `"` quotes, `""` inside quotes); `None` at a quote left
/// open.
fn split_record(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(cur);
    Some(fields)
}

/// An IP protocol given as a number or a name.
fn protocol_number(s: &str) -> Option<u8> {
    let s = s.trim();
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    Some(match s.to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        _ => return None,
    })
}

/// An endpoint as compared: the parsed address (else the text) and the port (0 = none).
type Endpoint = (String, u16);

fn endpoint(ip: &str, port: Option<u16>) -> Endpoint {
    let ip = ip.trim();
    let ip = ip
        .parse::<IpAddr>()
        .map_or_else(|_| ip.to_string(), |a| a.to_string());
    (ip, port.unwrap_or(0))
}

/// An IPv6 address (RFC 5952 text) as ndpiReader prints it: each `:0:` (left to right, not
/// overlapping) replaced by `::`.
fn ndpi_form(ip: &str) -> String {
    if ip.contains(':') {
        ip.replace(":0:", "::")
    } else {
        ip.to_string()
    }
}

/// (capture file name, protocol, the endpoint pair in order).
type FlowKey = (String, u8, Endpoint, Endpoint);

fn flow_key(file: &str, protocol: u8, a: Endpoint, b: Endpoint) -> FlowKey {
    let name = file_name(file).to_string();
    if a <= b {
        (name, protocol, a, b)
    } else {
        (name, protocol, b, a)
    }
}

/// Where labels come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum LabelSource {
    DirNames,
    Csv(PathBuf),
}

impl LabelSource {
    pub fn parse(s: &str) -> LabelSource {
        if s == "dir-names" {
            LabelSource::DirNames
        } else {
            LabelSource::Csv(PathBuf::from(s))
        }
    }
}

/// The labels of a run.
pub struct Labels {
    source: LabelSource,
    by_id: HashMap<u64, usize>,
    by_key: HashMap<FlowKey, Vec<usize>>,
    /// Each kept row's label.
    rows: Vec<String>,
    drop: Vec<String>,
    pub rows_read: u64,
    pub rows_dropped: u64,
}

/// What one flow's label lookup found.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    Label(String),
    /// No label row (or no `labels` value) for the flow.
    None,
    /// Its key's rows disagree.
    Ambiguous,
    /// Its label is one of `--drop-labels`.
    Dropped,
}

impl Labels {
    pub fn load(source: &LabelSource, column: &str, drop: &[String]) -> anyhow::Result<Labels> {
        let mut labels = Labels {
            source: source.clone(),
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            rows: Vec::new(),
            drop: drop.to_vec(),
            rows_read: 0,
            rows_dropped: 0,
        };
        if let LabelSource::Csv(path) = source {
            labels.read_csv(path, column)?;
        }
        Ok(labels)
    }

    fn read_csv(&mut self, path: &Path, column: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the labels file {}", path.display()))?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .with_context(|| format!("{}: empty", path.display()))?;
        let header = split_record(header.trim_start_matches('\u{feff}'))
            .with_context(|| format!("{}: the header has an open quote", path.display()))?;
        let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.trim()));
        let label_col = col(&[column]).with_context(|| {
            format!(
                "{}: no column {column:?} (columns: {}); choose one with --label-column",
                path.display(),
                header.join(", ")
            )
        })?;
        let id_col = col(&["flow_id"]);
        let key_cols = [
            col(&["pcap", "source", "file", "capture"]),
            col(&["l4_proto", "protocol"]),
            col(&["src_ip"]),
            col(&["src_port"]),
            col(&["dst_ip"]),
            col(&["dst_port"]),
        ];
        if id_col.is_none() && key_cols.iter().any(Option::is_none) {
            bail!(
                "{}: a labels file needs a flow_id column, or the columns pcap (or source), l4_proto (or protocol), src_ip, src_port, dst_ip and dst_port",
                path.display()
            );
        }
        for (i, line) in lines {
            let at = || format!("{}: line {}", path.display(), i + 1);
            let f = split_record(line).with_context(|| format!("{}: an open quote", at()))?;
            if f.len() != header.len() {
                bail!(
                    "{}: {} fields where the header has {}",
                    at(),
                    f.len(),
                    header.len()
                );
            }
            self.rows_read += 1;
            let label = f[label_col].trim();
            if label.is_empty() || self.drop.iter().any(|d| d == label) {
                self.rows_dropped += 1;
                continue;
            }
            let row = self.rows.len();
            self.rows.push(label.to_string());
            if let Some(c) = id_col {
                let id = f[c]
                    .trim()
                    .parse()
                    .with_context(|| format!("{}: flow_id {:?}", at(), f[c]))?;
                self.by_id.insert(id, row);
                continue;
            }
            let [file, proto, sip, sport, dip, dport] =
                key_cols.map(|c| f[c.expect("checked")].trim());
            let proto =
                protocol_number(proto).with_context(|| format!("{}: protocol {proto:?}", at()))?;
            let port = |p: &str| -> anyhow::Result<Option<u16>> {
                if p.is_empty() {
                    return Ok(None);
                }
                let n: u16 = p.parse().with_context(|| format!("{}: port {p:?}", at()))?;
                Ok((n != 0).then_some(n))
            };
            let key = flow_key(
                file,
                proto,
                endpoint(sip, port(sport)?),
                endpoint(dip, port(dport)?),
            );
            self.by_key.entry(key).or_default().push(row);
        }
        Ok(())
    }

    /// The label rows a flow matches (empty for dir-names).
    fn rows_of(&self, ex: &FlowExample, dataset_file: &str) -> Vec<usize> {
        if let Some(r) = ex.id.flow_id.and_then(|id| self.by_id.get(&id)) {
            return vec![*r];
        }
        let id = &ex.id;
        let (Some(sip), Some(dip)) = (&id.src_ip, &id.dst_ip) else {
            return Vec::new();
        };
        let file = id.source.as_deref().unwrap_or(dataset_file);
        let (a, b) = (endpoint(sip, id.src_port), endpoint(dip, id.dst_port));
        let key = flow_key(file, ex.flow.protocol, a.clone(), b.clone());
        if let Some(rows) = self.by_key.get(&key) {
            return rows.clone();
        }
        let ndpi = |e: Endpoint| (ndpi_form(&e.0), e.1);
        let key = flow_key(file, ex.flow.protocol, ndpi(a), ndpi(b));
        self.by_key.get(&key).cloned().unwrap_or_default()
    }

    /// The flow's label.
    pub fn lookup(&self, ex: &FlowExample, dataset_file: &str) -> Lookup {
        match &self.source {
            LabelSource::DirNames => match &ex.label {
                Some(l) if self.drop.contains(l) => Lookup::Dropped,
                Some(l) if !l.is_empty() => Lookup::Label(l.clone()),
                _ => Lookup::None,
            },
            LabelSource::Csv(_) => {
                let rows = self.rows_of(ex, dataset_file);
                let Some(&first) = rows.first() else {
                    return Lookup::None;
                };
                if rows.iter().any(|&r| self.rows[r] != self.rows[first]) {
                    return Lookup::Ambiguous;
                }
                Lookup::Label(self.rows[first].clone())
            }
        }
    }

    /// Marks the rows a flow matched (for [`LabelReport::rows_unmatched`]).
    pub fn mark(&self, ex: &FlowExample, dataset_file: &str, matched: &mut [bool]) {
        for r in self.rows_of(ex, dataset_file) {
            matched[r] = true;
        }
    }

    /// Kept label rows.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }
}

/// What the labels matched, over the fine-tuning data.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabelReport {
    pub source: String,
    pub rows_read: u64,
    pub rows_dropped: u64,
    /// Kept label rows that match no flow of the data.
    pub rows_unmatched: u64,
    pub flows: u64,
    pub flows_labelled: u64,
    pub flows_unlabelled: u64,
    pub flows_ambiguous: u64,
    pub flows_dropped_label: u64,
    /// Labelled flows per class: in training and held out.
    pub train_per_class: BTreeMap<String, u64>,
    pub held_out_per_class: BTreeMap<String, u64>,
}

impl std::fmt::Display for LabelReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "labels     {}: {} flows labelled of {}; {} without a label, {} ambiguous, {} with a dropped label",
            self.source, self.flows_labelled, self.flows, self.flows_unlabelled, self.flows_ambiguous, self.flows_dropped_label
        )?;
        if self.rows_read > 0 {
            writeln!(
                f,
                "           {} label rows read, {} dropped, {} matching no flow",
                self.rows_read, self.rows_dropped, self.rows_unmatched
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_and_keys() {
        assert_eq!(
            split_record(r#"a,"b,c",,"d ""e""""#).unwrap(),
            vec!["a", "b,c", "", r#"d "e""#]
        );
        assert!(split_record(r#"a,"b"#).is_none());
        assert_eq!(protocol_number("TCP"), Some(6));
        assert_eq!(protocol_number("58"), Some(58));
        assert_eq!(protocol_number("bogus"), None);
        let a = flow_key(
            "x/y.pcap",
            6,
            endpoint("10.0.0.1", Some(80)),
            endpoint("::1", None),
        );
        let b = flow_key(
            "y.pcap",
            6,
            endpoint("0:0::1", Some(0)),
            endpoint("10.0.0.1", Some(80)),
        );
        assert_eq!(
            a, b,
            "unordered endpoints, parsed addresses, file name only"
        );
    }
}

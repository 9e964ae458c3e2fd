//! The native dataset's flat columns — the flow's own fields, `flow_id` to `end_reason`,
//! and `labels` — encoded into Parquet pages straight from the rows, like the burst
//! columns ([`super::token_column`]).
//!
//! Through Arrow, every row group cost a set of Arrow arrays built from the rows, then 17
//! column writers, each with its own zstd contexts, statistics and (for three strings)
//! dictionary: 40% of the Parquet writers' time. Here each value is appended PLAIN to its
//! column's open page as the rows arrive (required columns have no levels; `labels` has
//! RLE definition levels), the chunk's min and max are kept on the way, and the pages go
//! through the part's one zstd context. The chunk statistics are those parquet's Arrow
//! writer computes with chunk statistics on: min and max in the column's sort order
//! (unsigned for the unsigned integers and the strings, signed for the timestamps), the
//! null count, strings longer than 64 bytes truncated to a lower bound for the minimum
//! and an upper bound for the maximum (marked inexact), the deprecated min/max fields only
//! for signed columns, and the bytes of a string column's values. The tests compare them
//! with that writer's for the same rows.

use super::parquet::{write_ip, NativeRow};
use super::token_column::{ChunkBuffers, ChunkPages, Compressor};
use arrow::datatypes::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::basic::{Type as PhysicalType, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::SchemaDescriptor;

/// The Arrow type of a flat column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    U8,
    U16,
    U32,
    U64,
    /// `timestamp[us, UTC]`: microseconds, the unit pyarrow, pandas, Polars and DuckDB
    /// all compute with (DuckDB cannot subtract nanosecond timestamps with a time zone).
    Timestamp,
    Str,
}

impl Ty {
    pub(super) fn arrow(self) -> DataType {
        match self {
            Ty::U8 => DataType::UInt8,
            Ty::U16 => DataType::UInt16,
            Ty::U32 => DataType::UInt32,
            Ty::U64 => DataType::UInt64,
            Ty::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Ty::Str => DataType::Utf8,
        }
    }
}

/// How a flat column's values are stored and ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `uint64`: INT64, unsigned order.
    U64,
    /// `uint32`, `uint16` and `uint8`: INT32, unsigned order.
    U32,
    /// `timestamp[us, UTC]`: INT64, signed order.
    Timestamp,
    /// `utf8`.
    Str,
}

impl Kind {
    fn of(ty: Ty) -> Kind {
        match ty {
            Ty::U8 | Ty::U16 | Ty::U32 => Kind::U32,
            Ty::U64 => Kind::U64,
            Ty::Timestamp => Kind::Timestamp,
            Ty::Str => Kind::Str,
        }
    }

    fn physical(self) -> PhysicalType {
        match self {
            Kind::U64 | Kind::Timestamp => PhysicalType::INT64,
            Kind::U32 => PhysicalType::INT32,
            Kind::Str => PhysicalType::BYTE_ARRAY,
        }
    }
}

/// One of the flow's own columns: its name, Arrow type, whether it can be null, and what
/// it holds (written into the schema field's `description` metadata; `unit` too where
/// the column has one).
pub(super) struct ColumnDef {
    pub name: &'static str,
    pub ty: Ty,
    pub nullable: bool,
    pub unit: Option<&'static str>,
    pub description: &'static str,
}

const fn col(
    name: &'static str,
    ty: Ty,
    nullable: bool,
    unit: Option<&'static str>,
    description: &'static str,
) -> ColumnDef {
    ColumnDef {
        name,
        ty,
        nullable,
        unit,
        description,
    }
}

/// The native schema's own columns, in schema order; the five burst columns stand between
/// the first [`BURSTS_AT`] of them and the rest. The schema is stated here once:
/// `native_schema` and the writers are derived from it.
pub(super) const COLUMNS: [ColumnDef; 27] = [
    col("flow_id", Ty::U64, false, None, "deterministic id of the flow: its source and its index there"),
    col("source", Ty::Str, false, None, "the capture file the flow was read from (- for standard input)"),
    col("src_ip", Ty::Str, false, None, "forward endpoint's address (the internal one, else the first packet's source)"),
    col("dst_ip", Ty::Str, false, None, "backward endpoint's address"),
    col("src_port", Ty::U16, true, None, "forward endpoint's TCP/UDP port; null for ICMP"),
    col("dst_port", Ty::U16, true, None, "backward endpoint's TCP/UDP port; null for ICMP"),
    col("protocol", Ty::U8, false, None, "IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6"),
    col("ip_version", Ty::U8, false, None, "4 or 6"),
    col("icmp_type", Ty::U8, true, None, "ICMP/ICMPv6: the first packet's type; null otherwise"),
    col("icmp_code", Ty::U8, true, None, "ICMP/ICMPv6: the first packet's code; null otherwise"),
    col("icmp_id", Ty::U16, true, None, "ICMP/ICMPv6 echo: the identifier (one flow per identifier); null otherwise"),
    col("icmp_quoted_protocol", Ty::U8, true, None, "ICMP/ICMPv6 error: the quoted packet's IP protocol; null otherwise"),
    col("icmp_quoted_src_port", Ty::U16, true, None, "ICMP/ICMPv6 error: the quoted packet's source port (0 if it has none); null otherwise"),
    col("icmp_quoted_dst_port", Ty::U16, true, None, "ICMP/ICMPv6 error: the quoted packet's destination port (0 if it has none); null otherwise"),
    col("tunnel", Ty::Str, true, None, "the outermost tunnel the flow's first packet came through (vxlan, gre, ...); null if none"),
    col("outer_src_ip", Ty::Str, true, None, "the outermost IP header's source address of the flow's first packet; null without a tunnel"),
    col("outer_dst_ip", Ty::Str, true, None, "the outermost IP header's destination address of the flow's first packet; null without a tunnel"),
    col("tunnel_id", Ty::U32, true, None, "the outermost tunnel's id (VXLAN/Geneve VNI, GRE key, GTP-U TEID, ERSPAN session); null if it has none"),
    col("start_time", Ty::Timestamp, false, Some("microseconds since the Unix epoch, UTC"), "the flow's earliest packet"),
    col("end_time", Ty::Timestamp, false, Some("microseconds since the Unix epoch, UTC"), "the flow's latest packet"),
    col("flow_duration", Ty::U64, false, Some("microseconds"), "end_time - start_time (netFound's flow_duration)"),
    col("fwd_packets", Ty::U64, false, Some("packets"), "packets from src to dst"),
    col("bwd_packets", Ty::U64, false, Some("packets"), "packets from dst to src"),
    col("fwd_bytes", Ty::U64, false, Some("bytes"), "IP bytes (sum of IP total lengths) from src to dst"),
    col("bwd_bytes", Ty::U64, false, Some("bytes"), "IP bytes (sum of IP total lengths) from dst to src"),
    col("end_reason", Ty::Str, false, None, "why the flow ended: idle, active, tcp_close, evicted, end_of_capture, interrupted"),
    col("labels", Ty::Str, true, None, "the flow's class (--label-from-dir); null for unlabelled data"),
];

/// How many of [`COLUMNS`] come before the burst columns (the leaf of `burst_tokens`).
pub(super) const BURSTS_AT: usize = 26;
/// Leaves of the burst columns.
const BURST_LEAVES: usize = 5;

/// The leaves [`FlatColumns`] writes, in [`COLUMNS`] order.
pub fn flat_leaves() -> impl Iterator<Item = usize> {
    (0..COLUMNS.len()).map(|k| if k < BURSTS_AT { k } else { k + BURST_LEAVES })
}

/// Longest string min/max written whole; longer ones are truncated, as parquet's writers
/// do by default (`DEFAULT_STATISTICS_TRUNCATE_LENGTH`).
const STATISTICS_TRUNCATE: usize = 64;

/// One flat column's chunk and its running statistics.
struct FlatColumn {
    kind: Kind,
    pages: ChunkPages,
    /// Values written (not null).
    values: u64,
    nulls: u64,
    /// Min and max so far of an integer column, in its sort order (bit patterns of `i64`
    /// for [`Kind::Timestamp`]).
    min: u64,
    max: u64,
    /// Min and max so far of a string column.
    min_bytes: Vec<u8>,
    max_bytes: Vec<u8>,
    /// Bytes of a string column's values.
    value_bytes: i64,
}

impl FlatColumn {
    /// A value of a nullable integer column, or its null.
    fn opt_unsigned(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.unsigned(v),
            None => {
                self.pages.flat_entry(0);
                self.nulls += 1;
            }
        }
    }

    fn unsigned(&mut self, v: u64) {
        if self.kind == Kind::U32 {
            // Values of uint16 and uint8 fields, so always in i32's range.
            self.pages
                .values
                .extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            self.pages.values.extend_from_slice(&v.to_le_bytes());
        }
        self.pages.flat_entry(1);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.values += 1;
    }

    fn signed(&mut self, v: i64) {
        self.pages.values.extend_from_slice(&v.to_le_bytes());
        self.pages.flat_entry(1);
        if self.values == 0 || v < self.min as i64 {
            self.min = v as u64;
        }
        if self.values == 0 || v > self.max as i64 {
            self.max = v as u64;
        }
        self.values += 1;
    }

    fn string(&mut self, v: Option<&[u8]>) {
        let Some(v) = v else {
            self.pages.flat_entry(0);
            self.nulls += 1;
            return;
        };
        // PLAIN byte array: 4-byte little-endian length, then the bytes. Strings here are
        // paths, addresses and names, far below 4 GiB.
        self.pages
            .values
            .extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.pages.values.extend_from_slice(v);
        self.pages.flat_entry(1);
        if self.values == 0 || v < self.min_bytes.as_slice() {
            self.min_bytes.clear();
            self.min_bytes.extend_from_slice(v);
        }
        if self.values == 0 || v > self.max_bytes.as_slice() {
            self.max_bytes.clear();
            self.max_bytes.extend_from_slice(v);
        }
        self.value_bytes += v.len() as i64;
        self.values += 1;
    }

    fn statistics(&mut self) -> Statistics {
        let any = self.values > 0;
        let nulls = Some(self.nulls);
        match self.kind {
            Kind::U32 => ValueStatistics::<i32>::new(
                any.then_some(self.min as i32),
                any.then_some(self.max as i32),
                None,
                nulls,
                false,
            )
            .into(),
            // Bit patterns of u64 (unsigned order) or i64 (signed, the timestamps); the
            // deprecated min/max fields hold signed order only.
            Kind::U64 | Kind::Timestamp => ValueStatistics::<i64>::new(
                any.then_some(self.min as i64),
                any.then_some(self.max as i64),
                None,
                nulls,
                false,
            )
            .with_backwards_compatible_min_max(self.kind == Kind::Timestamp)
            .into(),
            Kind::Str => {
                if !any {
                    return ValueStatistics::<ByteArray>::new(None, None, None, nulls, false)
                        .into();
                }
                let (min, min_cut) = lower_bound(std::mem::take(&mut self.min_bytes));
                let (max, max_cut) = upper_bound(std::mem::take(&mut self.max_bytes));
                ValueStatistics::<ByteArray>::new(
                    Some(ByteArray::from(min)),
                    Some(ByteArray::from(max)),
                    None,
                    nulls,
                    false,
                )
                .with_min_is_exact(!min_cut)
                .with_max_is_exact(!max_cut)
                .into()
            }
        }
    }
}

/// A string minimum as written: at most [`STATISTICS_TRUNCATE`] bytes, cut at a character
/// boundary (a lower bound of the minimum), and whether it was cut. Whole if no cut is
/// possible.
fn lower_bound(v: Vec<u8>) -> (Vec<u8>, bool) {
    if v.len() <= STATISTICS_TRUNCATE {
        return (v, false);
    }
    let Ok(s) = std::str::from_utf8(&v) else {
        return (v[..STATISTICS_TRUNCATE].to_vec(), true);
    };
    match (1..=STATISTICS_TRUNCATE)
        .rev()
        .find(|&at| s.is_char_boundary(at))
    {
        Some(at) => (v[..at].to_vec(), true),
        None => (v, false),
    }
}

/// A string maximum as written: cut to at most [`STATISTICS_TRUNCATE`] bytes at a
/// character boundary no more than 3 bytes short of it, the last character that can be
/// incremented without growing its UTF-8 length incremented (and those after it dropped),
/// giving an upper bound of the maximum; and whether it was cut. Whole if no cut is
/// possible.
fn upper_bound(v: Vec<u8>) -> (Vec<u8>, bool) {
    if v.len() <= STATISTICS_TRUNCATE {
        return (v, false);
    }
    let Ok(s) = std::str::from_utf8(&v) else {
        // Not UTF-8 (never the case for this dataset's strings): increment bytewise.
        let mut cut = v[..STATISTICS_TRUNCATE].to_vec();
        while let Some(last) = cut.pop() {
            if last < u8::MAX {
                cut.push(last + 1);
                return (cut, true);
            }
        }
        return (v, false);
    };
    let Some(at) = (STATISTICS_TRUNCATE - 3..=STATISTICS_TRUNCATE)
        .rev()
        .find(|&at| s.is_char_boundary(at))
    else {
        return (v, false);
    };
    let prefix = &s[..at];
    for (k, c) in prefix.char_indices().rev() {
        let next = char::from_u32(u32::from(c) + 1).filter(|n| n.len_utf8() == c.len_utf8());
        if let Some(next) = next {
            let mut out = prefix.as_bytes()[..k].to_vec();
            let mut buf = [0u8; 4];
            out.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
            return (out, true);
        }
    }
    (v, false)
}

/// One row group's flat column chunks, built row by row.
pub struct FlatColumns {
    columns: Vec<FlatColumn>,
    /// An address as text, reused.
    text: String,
}

impl FlatColumns {
    /// The flat column chunks of a row group of `schema`, which must be the native schema's
    /// Parquet schema, working in the buffers `spare` holds for their leaves.
    pub(super) fn new(
        schema: &SchemaDescriptor,
        level: ZstdLevel,
        page_bytes: usize,
        spare: &mut [ChunkBuffers],
    ) -> Result<Self, ParquetError> {
        let columns = COLUMNS
            .iter()
            .zip(flat_leaves())
            .map(|(def, leaf)| {
                let (name, kind) = (def.name, Kind::of(def.ty));
                let (Some(buffers), true) = (
                    spare.get_mut(leaf),
                    leaf < schema.num_columns() && schema.column(leaf).name() == name,
                ) else {
                    return Err(ParquetError::General(format!(
                        "the schema has no column {name} at leaf {leaf}"
                    )));
                };
                let max_def = i16::from(def.nullable);
                Ok(FlatColumn {
                    kind,
                    pages: ChunkPages::new(
                        schema.column(leaf),
                        level,
                        page_bytes,
                        max_def,
                        0,
                        kind.physical(),
                        std::mem::take(buffers),
                    )?,
                    values: 0,
                    nulls: 0,
                    min: u64::MAX,
                    max: 0,
                    min_bytes: Vec::new(),
                    max_bytes: Vec::new(),
                    value_bytes: 0,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FlatColumns {
            columns,
            text: String::with_capacity(40),
        })
    }

    /// Appends one row.
    pub fn push(&mut self, row: &NativeRow<'_>, zstd: &mut Compressor) -> Result<(), ParquetError> {
        let f = row.flow;
        let [flow_id, source, src_ip, dst_ip, src_port, dst_port, protocol, ip_version, icmp_type, icmp_code, icmp_id, quoted_protocol, quoted_src_port, quoted_dst_port, tunnel, outer_src_ip, outer_dst_ip, tunnel_id, start, end, duration, fwd_packets, bwd_packets, fwd_bytes, bwd_bytes, end_reason, labels] =
            &mut self.columns[..]
        else {
            return Err(ParquetError::General("flat columns missing".into()));
        };
        flow_id.unsigned(row.flow_id);
        source.string(Some(row.source.as_bytes()));
        self.text.clear();
        write_ip(&mut self.text, f.src);
        src_ip.string(Some(self.text.as_bytes()));
        self.text.clear();
        write_ip(&mut self.text, f.dst);
        dst_ip.string(Some(self.text.as_bytes()));
        // An ICMP flow's port fields hold its grouping key; its own columns say what it is.
        let icmp = f.icmp;
        let ports = icmp.is_none().then_some((f.src_port, f.dst_port));
        src_port.opt_unsigned(ports.map(|p| u64::from(p.0)));
        dst_port.opt_unsigned(ports.map(|p| u64::from(p.1)));
        protocol.unsigned(u64::from(f.protocol));
        ip_version.unsigned(if f.src.is_ipv4() { 4 } else { 6 });
        icmp_type.opt_unsigned(icmp.map(|i| u64::from(i.icmp_type)));
        icmp_code.opt_unsigned(icmp.map(|i| u64::from(i.code)));
        icmp_id.opt_unsigned(icmp.and_then(|i| i.identifier).map(u64::from));
        let quoted = icmp.and_then(|i| i.quoted);
        quoted_protocol.opt_unsigned(quoted.map(|q| u64::from(q.0)));
        quoted_src_port.opt_unsigned(quoted.map(|q| u64::from(q.1)));
        quoted_dst_port.opt_unsigned(quoted.map(|q| u64::from(q.2)));
        let t = f.tunnel;
        tunnel.string(t.map(|t| t.kind.as_bytes()));
        for (column, addr) in [
            (outer_src_ip, t.map(|t| t.outer_src)),
            (outer_dst_ip, t.map(|t| t.outer_dst)),
        ] {
            match addr {
                Some(a) => {
                    self.text.clear();
                    write_ip(&mut self.text, a);
                    column.string(Some(self.text.as_bytes()));
                }
                None => column.string(None),
            }
        }
        tunnel_id.opt_unsigned(t.and_then(|t| t.id).map(u64::from));
        // Microseconds since the epoch (truncated, as netFound's durations are).
        start.signed((f.first_ts_ns / 1000) as i64);
        end.signed((f.last_ts_ns / 1000) as i64);
        duration.unsigned(f.tokens.flow_duration_us);
        fwd_packets.unsigned(f.fwd_packets);
        bwd_packets.unsigned(f.bwd_packets);
        fwd_bytes.unsigned(f.fwd_bytes);
        bwd_bytes.unsigned(f.bwd_bytes);
        end_reason.string(Some(f.end_reason.name().as_bytes()));
        labels.string(row.label.map(str::as_bytes));
        for c in &mut self.columns {
            c.pages.end_row(zstd)?;
        }
        Ok(())
    }

    /// Closes every chunk, in [`flat_leaves`] order: each chunk's bytes and what the row
    /// group writer needs to splice them in. The working buffers go back to `spare`.
    pub(super) fn close(
        self,
        zstd: &mut Compressor,
        spare: &mut [ChunkBuffers],
    ) -> Result<Vec<(Bytes, ColumnCloseResult)>, ParquetError> {
        self.columns
            .into_iter()
            .zip(flat_leaves())
            .map(|(mut c, leaf)| {
                let statistics = c.statistics();
                let bytes = (c.kind == Kind::Str).then_some(c.value_bytes);
                let mut unused = ChunkBuffers::default();
                let to = spare.get_mut(leaf).unwrap_or(&mut unused);
                c.pages.close_with(zstd, Some(statistics), bytes, to)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{lower_bound, upper_bound, FlatColumns, STATISTICS_TRUNCATE};
    use crate::dataset::parquet::native_schema;
    use crate::dataset::token_column::ChunkBuffers;
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowSchemaConverter;
    use parquet::basic::ZstdLevel;

    /// The native schema's leaves are where [`FlatColumns`] expects them; a schema whose
    /// columns moved is an error, not a file with values under the wrong names.
    #[test]
    fn leaves_are_checked_by_name() {
        let leaves = |schema: &Schema| {
            ArrowSchemaConverter::new()
                .convert(schema)
                .expect("convert")
        };
        let mut spare: Vec<ChunkBuffers> = (0..32).map(|_| ChunkBuffers::default()).collect();
        let native = native_schema();
        assert!(
            FlatColumns::new(&leaves(&native), ZstdLevel::default(), 1 << 20, &mut spare).is_ok()
        );
        let mut fields: Vec<Field> = native.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.swap(4, 5);
        let Err(e) = FlatColumns::new(
            &leaves(&Schema::new(fields)),
            ZstdLevel::default(),
            1 << 20,
            &mut spare,
        ) else {
            panic!("swapped ports accepted");
        };
        assert!(e.to_string().contains("src_port"), "{e}");
    }

    #[test]
    fn short_strings_are_their_own_bounds() {
        let v = b"10.0.0.1".to_vec();
        assert_eq!(lower_bound(v.clone()), (v.clone(), false));
        assert_eq!(upper_bound(v.clone()), (v, false));
    }

    #[test]
    fn long_ascii_strings_are_cut_and_the_maximum_incremented() {
        let v = "a".repeat(70).into_bytes();
        let (min, cut) = lower_bound(v.clone());
        assert!(cut);
        assert_eq!(min, "a".repeat(STATISTICS_TRUNCATE).into_bytes());
        assert!(min.as_slice() <= v.as_slice());
        let (max, cut) = upper_bound(v.clone());
        assert!(cut);
        let mut want = "a".repeat(STATISTICS_TRUNCATE - 1);
        want.push('b');
        assert_eq!(max, want.into_bytes());
        assert!(max.as_slice() >= v.as_slice());
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // 63 ASCII bytes, then two-byte characters: byte 64 is inside a character.
        let s = format!("{}{}", "x".repeat(63), "é".repeat(4));
        let v = s.clone().into_bytes();
        let (min, _) = lower_bound(v.clone());
        assert_eq!(min, "x".repeat(63).into_bytes());
        let (max, cut) = upper_bound(v.clone());
        assert!(cut);
        assert!(std::str::from_utf8(&max).is_ok());
        assert!(max.as_slice() >= v.as_slice());
        // A last character that cannot grow within its width is dropped, the one before
        // it incremented.
        let s = format!("{}\u{7f}{}", "y".repeat(63), "z".repeat(10));
        let (max, _) = upper_bound(s.clone().into_bytes());
        let mut want = "y".repeat(62);
        want.push('z');
        assert_eq!(max, want.into_bytes());
        assert!(max.as_slice() >= s.as_bytes());
    }
}

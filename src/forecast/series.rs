//! Link-load series: points read from long-format tables (`timestamp, link, value`), rates
//! or raw interface counters turned into per-interval rates on a fixed grid, with every
//! correction counted ([`Corrections`]) and every gap left missing (NaN), never filled in.
//!
//! - Rates (`value` is already a rate): the value of an interval is the mean of the points
//!   whose timestamps fall in it; an interval without a point is missing.
//! - Counters (`--counters 32|64`, e.g. SNMP `ifHCInOctets` or node_exporter's
//!   `node_network_receive_bytes_total`): consecutive samples give a rate over the segment
//!   between them, `Δ / Δt`. A decrease is a **wrap** when the previous sample was in the
//!   top quarter of the counter's range (`Δ = v + 2^bits − prev`), else a **reset** (the
//!   device restarted; the segment's traffic is unknown and left missing, where Prometheus
//!   would assume a restart from 0). A segment longer than `max_gap` is a **gap**, left
//!   missing. An interval's rate is the time-weighted mean of the segments covering it,
//!   missing where less than half of it is covered.
//! - Points of one series out of time order are sorted (counted); two points at the same
//!   time keep the last one read (counted). A value that is not a number is an error naming
//!   its line; an empty value or `NaN` is a missing point (counted).

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::Path;

/// A set of series on one time grid: `values[s][i]` is series `s`'s value over the interval
/// starting at `start + i·step` (unix seconds); NaN = missing.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub start: i64,
    pub step: i64,
    pub names: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

impl Panel {
    pub fn len(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The start time of interval `i`.
    pub fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// The intervals `[from, to)` of every series.
    pub fn slice(&self, from: usize, to: usize) -> Panel {
        Panel {
            start: self.time(from),
            step: self.step,
            names: self.names.clone(),
            values: self.values.iter().map(|v| v[from..to].to_vec()).collect(),
        }
    }

    /// Missing points over all series.
    pub fn missing(&self) -> usize {
        self.values
            .iter()
            .map(|v| v.iter().filter(|x| x.is_nan()).count())
            .sum()
    }
}

/// One raw observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Unix seconds.
    pub t: f64,
    pub series: String,
    /// NaN = missing.
    pub value: f64,
}

/// What the input's values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Rate,
    /// A monotone counter of this many bits (32 or 64).
    Counter(u32),
}

/// How points become a panel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridSpec {
    /// Interval length in seconds.
    pub step: i64,
    pub kind: ValueKind,
    /// Counters: a segment between two samples longer than this (seconds) is a gap. `None`:
    /// 1.5 times the series' median sample spacing.
    pub max_gap: Option<f64>,
    /// Multiplies every rate (e.g. 8: octet counters to bit/s).
    pub scale: f64,
}

/// The corrections made on the way from points to a panel, each counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Corrections {
    pub points: u64,
    /// Points of a series found out of time order (the series was sorted).
    pub reordered: u64,
    /// Points at a time already seen in their series (the last one read was kept).
    pub duplicates: u64,
    /// Points without a value (empty or NaN).
    pub missing_values: u64,
    /// Counter decreases read as wraps.
    pub wraps: u64,
    /// Counter decreases read as resets (their segment left missing).
    pub resets: u64,
    /// Counter segments longer than the gap limit (left missing).
    pub gaps: u64,
    /// Intervals left missing in the panel.
    pub missing_intervals: u64,
}

impl Corrections {
    /// One line for a job's summary.
    pub fn describe(&self) -> String {
        format!(
            "{} points: {} reordered, {} duplicates (last kept), {} without a value; counters: {} wraps, {} resets, {} gaps; {} intervals missing",
            self.points,
            self.reordered,
            self.duplicates,
            self.missing_values,
            self.wraps,
            self.resets,
            self.gaps,
            self.missing_intervals
        )
    }
}

/// Points to a panel on the grid of `spec.step`, from the first point's interval to the
/// last's, every series on the same grid.
pub fn to_panel(points: Vec<Point>, spec: &GridSpec) -> anyhow::Result<(Panel, Corrections)> {
    if spec.step <= 0 {
        bail!("the interval must be positive");
    }
    if let ValueKind::Counter(bits) = spec.kind {
        if bits != 32 && bits != 64 {
            bail!("counters are 32 or 64 bits, not {bits}");
        }
    }
    let mut c = Corrections {
        points: points.len() as u64,
        ..Default::default()
    };
    let mut by: BTreeMap<String, Vec<(f64, f64, usize)>> = BTreeMap::new();
    for (i, p) in points.into_iter().enumerate() {
        if !p.t.is_finite() {
            bail!(
                "point {} of series {:?}: time {} is not finite",
                i + 1,
                p.series,
                p.t
            );
        }
        by.entry(p.series).or_default().push((p.t, p.value, i));
    }
    if by.is_empty() {
        bail!("no points");
    }
    for pts in by.values_mut() {
        c.reordered += pts.windows(2).filter(|w| w[1].0 < w[0].0).count() as u64;
        // Sort by time, then by reading order so that the last point read at a time wins.
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
        let before = pts.len();
        let mut kept: Vec<(f64, f64, usize)> = Vec::with_capacity(before);
        for &p in pts.iter() {
            match kept.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => kept.push(p),
            }
        }
        c.duplicates += (before - kept.len()) as u64;
        c.missing_values += kept.iter().filter(|p| p.1.is_nan()).count() as u64;
        *pts = kept;
    }
    let t0 = by.values().map(|p| p[0].0).fold(f64::INFINITY, f64::min);
    let t1 = by
        .values()
        .map(|p| p[p.len() - 1].0)
        .fold(f64::NEG_INFINITY, f64::max);
    let step = spec.step as f64;
    let start = (t0 / step).floor() as i64 * spec.step;
    let n = (((t1 - start as f64) / step).floor() as usize) + 1;
    if n > 50_000_000 {
        bail!(
            "{n} intervals of {} s: the interval is too short for the time span",
            spec.step
        );
    }
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (name, pts) in by {
        let v = match spec.kind {
            ValueKind::Rate => rates_on_grid(&pts, start, spec.step, n),
            ValueKind::Counter(bits) => {
                counters_on_grid(&pts, start, spec.step, n, bits, spec.max_gap, &mut c)
            }
        };
        names.push(name);
        values.push(v.into_iter().map(|x| x * spec.scale).collect::<Vec<f64>>());
    }
    let panel = Panel {
        start,
        step: spec.step,
        names,
        values,
    };
    c.missing_intervals = panel.missing() as u64;
    Ok((panel, c))
}

fn rates_on_grid(pts: &[(f64, f64, usize)], start: i64, step: i64, n: usize) -> Vec<f64> {
    let mut sum = vec![0.0; n];
    let mut count = vec![0u32; n];
    for &(t, v, _) in pts {
        if v.is_nan() {
            continue;
        }
        let i = ((t - start as f64) / step as f64).floor() as usize;
        sum[i] += v;
        count[i] += 1;
    }
    sum.iter()
        .zip(&count)
        .map(|(&s, &k)| if k == 0 { f64::NAN } else { s / k as f64 })
        .collect()
}

/// The rate segments between consecutive counter samples, on the grid.
fn counters_on_grid(
    pts: &[(f64, f64, usize)],
    start: i64,
    step: i64,
    n: usize,
    bits: u32,
    max_gap: Option<f64>,
    c: &mut Corrections,
) -> Vec<f64> {
    let valid: Vec<(f64, f64)> = pts
        .iter()
        .filter(|p| !p.1.is_nan())
        .map(|p| (p.0, p.1))
        .collect();
    let limit = max_gap.unwrap_or_else(|| {
        let mut d: Vec<f64> = valid.windows(2).map(|w| w[1].0 - w[0].0).collect();
        d.sort_by(f64::total_cmp);
        d.get(d.len() / 2).map_or(f64::INFINITY, |m| 1.5 * m)
    });
    let range = 2f64.powi(bits as i32);
    let mut sum = vec![0.0; n];
    let mut covered = vec![0.0; n];
    for w in valid.windows(2) {
        let ((ta, va), (tb, vb)) = (w[0], w[1]);
        let dt = tb - ta;
        if dt > limit {
            c.gaps += 1;
            continue;
        }
        let delta = if vb >= va {
            vb - va
        } else if va >= 0.75 * range {
            c.wraps += 1;
            vb + range - va
        } else {
            c.resets += 1;
            continue;
        };
        let rate = delta / dt;
        spread(&mut sum, &mut covered, start, step, ta, tb, rate);
    }
    sum.iter()
        .zip(&covered)
        .map(|(&s, &cov)| {
            if cov < 0.5 * step as f64 {
                f64::NAN
            } else {
                s / cov
            }
        })
        .collect()
}

/// Adds `rate` over `[ta, tb)` to the intervals it overlaps, weighted by the overlap.
fn spread(
    sum: &mut [f64],
    covered: &mut [f64],
    start: i64,
    step: i64,
    ta: f64,
    tb: f64,
    rate: f64,
) {
    let s = step as f64;
    let first = ((ta - start as f64) / s).floor().max(0.0) as usize;
    let mut i = first;
    while i < sum.len() {
        let lo = start as f64 + i as f64 * s;
        let hi = lo + s;
        if lo >= tb {
            break;
        }
        let overlap = hi.min(tb) - lo.max(ta);
        if overlap > 0.0 {
            sum[i] += rate * overlap;
            covered[i] += overlap;
        }
        i += 1;
    }
}

/// A timestamp: unix seconds (integer or decimal, or milliseconds when above 1e11), or
/// RFC 3339 / ISO 8601 (`2026-12-03T05:00:00Z`, `2026-12-03 05:00:00`, UTC without a zone).
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(x) = s.parse::<f64>() {
        if !x.is_finite() {
            return None;
        }
        return Some(if x.abs() > 1e11 { x / 1000.0 } else { x });
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp() as f64 + t.timestamp_subsec_nanos() as f64 * 1e-9);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            let t = t.and_utc();
            return Some(t.timestamp() as f64 + t.timestamp_subsec_nanos() as f64 * 1e-9);
        }
    }
    None
}

/// A value: a number, or empty / `NaN` for a missing one. `None`: not a number.
pub fn parse_value(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let x: f64 = s.parse().ok()?;
    x.is_finite().then_some(x)
}

/// The column names accepted for each role.
const TIME_COLUMNS: &[&str] = &["timestamp", "time", "ts"];
const SERIES_COLUMNS: &[&str] = &["link", "series", "name", "id"];
const VALUE_COLUMNS: &[&str] = &["value", "load", "rate", "y"];

fn find_column(header: &[String], names: &[&str], what: &str) -> anyhow::Result<usize> {
    header
        .iter()
        .position(|h| names.contains(&h.trim().to_ascii_lowercase().as_str()))
        .with_context(|| {
            format!(
                "no {what} column: the header is {:?}; name it one of {:?}",
                header, names
            )
        })
}

/// A long-format CSV: a header naming the time, series and value columns (`timestamp,
/// link, value`), then one point per line.
pub fn read_csv(path: &Path) -> anyhow::Result<Vec<Point>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_csv(&text).with_context(|| format!("reading {}", path.display()))
}

pub fn parse_csv(text: &str) -> anyhow::Result<Vec<Point>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, head) = lines.next().context("the file is empty")?;
    let header: Vec<String> = head.split(',').map(|s| s.trim().to_string()).collect();
    let (ti, si, vi) = (
        find_column(&header, TIME_COLUMNS, "time")?,
        find_column(&header, SERIES_COLUMNS, "series (link)")?,
        find_column(&header, VALUE_COLUMNS, "value")?,
    );
    let mut out = Vec::new();
    for (no, line) in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != header.len() {
            bail!(
                "line {}: {} fields where the header has {}",
                no + 1,
                f.len(),
                header.len()
            );
        }
        let t = parse_time(f[ti])
            .with_context(|| format!("line {}: {:?} is not a time", no + 1, f[ti]))?;
        let value = parse_value(f[vi])
            .with_context(|| format!("line {}: {:?} is not a number", no + 1, f[vi]))?;
        out.push(Point {
            t,
            series: f[si].trim().to_string(),
            value,
        });
    }
    Ok(out)
}

/// A long-format Parquet file: columns for time (int64 or float unix seconds, a timestamp
/// type, or strings), series (strings or integers) and value (numbers).
pub fn read_parquet(path: &Path) -> anyhow::Result<Vec<Point>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a Parquet file", path.display()))?
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", path.display()))?;
        let schema = batch.schema();
        let header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let (ti, si, vi) = (
            find_column(&header, TIME_COLUMNS, "time")?,
            find_column(&header, SERIES_COLUMNS, "series (link)")?,
            find_column(&header, VALUE_COLUMNS, "value")?,
        );
        let cast = |i: usize, to: &DataType| -> anyhow::Result<arrow::array::ArrayRef> {
            arrow::compute::cast(batch.column(i), to)
                .with_context(|| format!("column {:?} as {to}", header[i]))
        };
        let times: Vec<Option<f64>> = match batch.column(ti).data_type() {
            DataType::Timestamp(unit, _) => {
                let per_s = match unit {
                    TimeUnit::Second => 1.0,
                    TimeUnit::Millisecond => 1e3,
                    TimeUnit::Microsecond => 1e6,
                    TimeUnit::Nanosecond => 1e9,
                };
                let a = cast(ti, &DataType::Int64)?;
                a.as_primitive::<Int64Type>()
                    .iter()
                    .map(|x| x.map(|x| x as f64 / per_s))
                    .collect()
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let a = cast(ti, &DataType::Utf8)?;
                a.as_string::<i32>()
                    .iter()
                    .map(|s| s.and_then(parse_time))
                    .collect()
            }
            _ => {
                let a = cast(ti, &DataType::Float64)?;
                a.as_primitive::<Float64Type>().iter().collect()
            }
        };
        let series = cast(si, &DataType::Utf8)?;
        let series = series.as_string::<i32>();
        let vals = cast(vi, &DataType::Float64)?;
        let vals = vals.as_primitive::<Float64Type>();
        for (r, t) in times.iter().enumerate() {
            let t =
                t.with_context(|| format!("{}: row {}: no time", path.display(), out.len() + 1))?;
            if series.is_null(r) {
                bail!("{}: row {}: no series name", path.display(), out.len() + 1);
            }
            let value = if vals.is_null(r) {
                f64::NAN
            } else {
                vals.value(r)
            };
            out.push(Point {
                t,
                series: series.value(r).to_string(),
                value,
            });
        }
    }
    Ok(out)
}

/// A panel as long-format CSV (`timestamp,link,value`, missing values empty).
pub fn write_csv(panel: &Panel, w: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(w, "timestamp,link,value")?;
    for i in 0..panel.len() {
        for (s, name) in panel.names.iter().enumerate() {
            let v = panel.values[s][i];
            if v.is_nan() {
                writeln!(w, "{},{name},", panel.time(i))?;
            } else {
                writeln!(w, "{},{name},{v}", panel.time(i))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(series: &str, xs: &[(f64, f64)]) -> Vec<Point> {
        xs.iter()
            .map(|&(t, value)| Point {
                t,
                series: series.into(),
                value,
            })
            .collect()
    }

    fn spec(kind: ValueKind) -> GridSpec {
        GridSpec {
            step: 60,
            kind,
            max_gap: None,
            scale: 1.0,
        }
    }

    #[test]
    fn rates_average_per_interval_and_leave_gaps_missing() {
        let p = pts("a", &[(0.0, 1.0), (30.0, 3.0), (60.0, 5.0), (200.0, 7.0)]);
        let (panel, c) = to_panel(p, &spec(ValueKind::Rate)).unwrap();
        assert_eq!(panel.start, 0);
        assert_eq!(panel.values[0][..2], [2.0, 5.0]);
        assert!(panel.values[0][2].is_nan());
        assert_eq!(panel.values[0][3], 7.0);
        assert_eq!(c.missing_intervals, 1);
    }

    #[test]
    fn unsorted_and_duplicate_points_are_counted() {
        let p = pts("a", &[(60.0, 1.0), (0.0, 2.0), (60.0, 9.0)]);
        let (panel, c) = to_panel(p, &spec(ValueKind::Rate)).unwrap();
        assert_eq!(c.reordered, 1);
        assert_eq!(c.duplicates, 1);
        assert_eq!(panel.values[0], vec![2.0, 9.0]);
    }

    #[test]
    fn counter_wrap_at_32_bits() {
        let top = 2f64.powi(32);
        // 600 units per 60 s, across the wrap.
        let p = pts("a", &[(0.0, top - 300.0), (60.0, 300.0), (120.0, 900.0)]);
        let (panel, c) = to_panel(p, &spec(ValueKind::Counter(32))).unwrap();
        assert_eq!(c.wraps, 1);
        assert_eq!(c.resets, 0);
        assert_eq!(panel.values[0][0], 10.0);
        assert_eq!(panel.values[0][1], 10.0);
    }

    #[test]
    fn counter_reset_leaves_its_segment_missing() {
        let p = pts(
            "a",
            &[(0.0, 1000.0), (60.0, 1600.0), (120.0, 50.0), (180.0, 650.0)],
        );
        let (panel, c) = to_panel(p, &spec(ValueKind::Counter(64))).unwrap();
        assert_eq!(c.resets, 1);
        assert_eq!(c.wraps, 0);
        assert_eq!(panel.values[0][0], 10.0);
        assert!(panel.values[0][1].is_nan());
        assert_eq!(panel.values[0][2], 10.0);
    }

    #[test]
    fn counter_gap_is_missing_not_interpolated() {
        // Samples every 60 s, then one 600 s apart.
        let p = pts(
            "a",
            &[
                (0.0, 0.0),
                (60.0, 600.0),
                (120.0, 1200.0),
                (720.0, 7200.0),
                (780.0, 7800.0),
            ],
        );
        let (panel, c) = to_panel(p, &spec(ValueKind::Counter(64))).unwrap();
        assert_eq!(c.gaps, 1);
        assert_eq!(panel.values[0][0], 10.0);
        assert!(panel.values[0][2..12].iter().all(|x| x.is_nan()));
        assert_eq!(panel.values[0][12], 10.0);
    }

    #[test]
    fn counter_rates_are_time_weighted_across_intervals() {
        // Samples at 30 s offsets: rate 10 then 20, each segment spans two intervals.
        let p = pts("a", &[(30.0, 0.0), (90.0, 600.0), (150.0, 1800.0)]);
        let (panel, _) = to_panel(p, &spec(ValueKind::Counter(64))).unwrap();
        assert_eq!(panel.values[0][1], 15.0);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let e = parse_csv("timestamp,link,value\n0,a,1\n60,a,abc\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 3"), "{e:#}");
        let e = parse_csv("when,link,value\n0,a,1\n").unwrap_err();
        assert!(format!("{e:#}").contains("no time column"), "{e:#}");
        let p = parse_csv("timestamp,link,value\n2026-12-03T00:00:00Z,a,\n").unwrap();
        assert!(p[0].value.is_nan());
        assert_eq!(p[0].t, 1_796_256_000.0);
    }
}

//! `netfm plot RUN_DIR`: a run's curves as PNG and SVG, from its `metrics.jsonl` (and, for a
//! fine-tuning run, its `report.json`), written to `RUN_DIR/plots/` or `--out`:
//!
//! - `loss.{png,svg}`: the training loss per step (and its 20-step moving mean) and the
//!   validation loss;
//! - pretraining: `validation.{png,svg}`: masked-token, swapped-burst and direction accuracy
//!   over the steps, each beside its baseline (a flat line in a lighter shade);
//! - fine-tuning: `validation.{png,svg}`: held-out accuracy and macro-F1, and
//!   `confusion.{png,svg}`: the final confusion matrix, rows normalised.
//!
//! Text is drawn with DejaVu Sans, bundled in `datasets/fonts/` (its licence beside it), so
//! no system font is needed.

use crate::cli::PlotArgs;
use crate::train::run::{read_json, read_metrics, METRICS_FILE, RUN_FILE};
use anyhow::{anyhow, bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;

static FONT: &[u8] = include_bytes!("../../datasets/fonts/DejaVuSans.ttf");

fn register_font() -> anyhow::Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        bail!("the bundled font does not load")
    }
}

/// One line of a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    width: u32,
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const LIGHT_BLUE: RGBColor = RGBColor(160, 200, 230);
const LIGHT_ORANGE: RGBColor = RGBColor(255, 200, 150);
const LIGHT_GREEN: RGBColor = RGBColor(160, 220, 160);

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

fn line_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.filter(|p| p.1.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(s.width),
            ))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn confusion_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    names: &[String],
    matrix: &[Vec<u64>],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let c = names.len().max(1) as f64;
    let (w, h) = root.dim_in_pixel();
    let (left, top) = (150.0, 60.0);
    let cell = ((w as f64 - left - 20.0) / c).min((h as f64 - top - 150.0) / c);
    let font = ("sans-serif", (cell * 0.28).clamp(9.0, 16.0) as u32).into_font();
    root.draw(&Text::new(
        "confusion (rows: true class, columns: predicted; shade: share of the row)",
        (10, 20),
        ("sans-serif", 16).into_font(),
    ))
    .map_err(err)?;
    for (t, row) in matrix.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (p, &n) in row.iter().enumerate() {
            let share = if total > 0 {
                n as f64 / total as f64
            } else {
                0.0
            };
            let shade = (255.0 * (1.0 - share)) as u8;
            let x = (left + p as f64 * cell) as i32;
            let y = (top + t as f64 * cell) as i32;
            let color = RGBColor(shade, shade, 255);
            root.draw(&Rectangle::new(
                [(x, y), (x + cell as i32, y + cell as i32)],
                color.filled(),
            ))
            .map_err(err)?;
            if n > 0 {
                let ink = if share > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    n.to_string(),
                    (x + 3, y + 3),
                    font.clone().color(&ink),
                ))
                .map_err(err)?;
            }
        }
        root.draw(&Text::new(
            names[t].clone(),
            (5, (top + (t as f64 + 0.35) * cell) as i32),
            font.clone(),
        ))
        .map_err(err)?;
    }
    for (p, name) in names.iter().enumerate() {
        let x = (left + (p as f64 + 0.3) * cell) as i32;
        let y = (top + c * cell + 5.0) as i32;
        let style = font.clone().transform(FontTransform::Rotate90);
        root.draw(&Text::new(name.clone(), (x, y), style))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn points(lines: &[&Value], key: &str) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter_map(|l| Some((l["step"].as_f64()?, l.pointer(key)?.as_f64()?)))
        .collect()
}

fn moving_mean(p: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(p.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in p.iter().enumerate() {
        sum += y;
        if i >= n {
            sum -= p[i - n].1;
        }
        out.push((x, sum / (i + 1).min(n) as f64));
    }
    out
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PlotSummary {
    pub files: Vec<PathBuf>,
}

impl std::fmt::Display for PlotSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.files {
            writeln!(f, "wrote      {}", p.display())?;
        }
        Ok(())
    }
}

/// Draws `$body` (with `$root` a drawing area) into `$dir/$name.png` and `.svg`.
macro_rules! draw_both {
    ($dir:expr, $name:expr, $size:expr, $files:expr, |$root:ident| $body:expr) => {{
        let png = $dir.join(format!("{}.png", $name));
        let svg = $dir.join(format!("{}.svg", $name));
        {
            let $root = BitMapBackend::new(&png, $size).into_drawing_area();
            $body?;
        }
        {
            let $root = SVGBackend::new(&svg, $size).into_drawing_area();
            $body?;
        }
        $files.push(png);
        $files.push(svg);
    }};
}

pub fn run(args: &PlotArgs) -> anyhow::Result<PlotSummary> {
    register_font()?;
    let dir = &args.run_dir;
    let run = read_json(&dir.join(RUN_FILE))
        .with_context(|| format!("{}: not a netfm run folder", dir.display()))?;
    let job = run["job"].as_str().unwrap_or("").to_string();
    if job != "pretrain" && job != "finetune" {
        bail!(
            "{}: a run of job {:?}; netfm plot draws pretrain and finetune runs",
            dir.display(),
            job
        );
    }
    let metrics = read_metrics(&dir.join(METRICS_FILE))?;
    let train: Vec<&Value> = metrics.iter().filter(|l| l["event"] == "train").collect();
    let val: Vec<&Value> = metrics.iter().filter(|l| l["event"] == "val").collect();
    if train.is_empty() {
        bail!(
            "{}/{METRICS_FILE}: no training steps logged yet",
            dir.display()
        );
    }
    let out = args.out.clone().unwrap_or_else(|| dir.join("plots"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = Vec::new();
    let loss = points(&train, "/loss");
    let mut loss_series = vec![
        Series {
            name: "train loss".into(),
            points: loss.clone(),
            color: LIGHT_BLUE,
            width: 1,
        },
        Series {
            name: "train loss, 20-step mean".into(),
            points: moving_mean(&loss, 20),
            color: BLUE,
            width: 2,
        },
    ];
    let val_loss_key = if job == "pretrain" {
        "/model/loss"
    } else {
        "/loss"
    };
    let vl = points(&val, val_loss_key);
    if !vl.is_empty() {
        loss_series.push(Series {
            name: "validation loss".into(),
            points: vl,
            color: ORANGE,
            width: 2,
        });
    }
    let title = format!("{job}: loss");
    draw_both!(out, "loss", (900, 500), files, |root| line_chart(
        root,
        &title,
        "loss",
        &loss_series
    ));
    let val_series: Vec<Series> = if job == "pretrain" {
        [
            ("mlm_acc", "masked-token accuracy", BLUE, LIGHT_BLUE),
            ("swap_acc", "swapped-burst accuracy", ORANGE, LIGHT_ORANGE),
            ("direction_acc", "direction accuracy", GREEN, LIGHT_GREEN),
        ]
        .iter()
        .flat_map(|&(k, name, c, light)| {
            [
                Series {
                    name: name.into(),
                    points: points(&val, &format!("/model/{k}")),
                    color: c,
                    width: 2,
                },
                Series {
                    name: format!("{name}, baseline"),
                    points: points(&val, &format!("/baseline/{k}")),
                    color: light,
                    width: 2,
                },
            ]
        })
        .collect()
    } else {
        vec![
            Series {
                name: "held-out accuracy".into(),
                points: points(&val, "/accuracy"),
                color: BLUE,
                width: 2,
            },
            Series {
                name: "held-out macro-F1".into(),
                points: points(&val, "/macro_f1"),
                color: ORANGE,
                width: 2,
            },
        ]
    };
    if val_series.iter().any(|s| !s.points.is_empty()) {
        let title = format!("{job}: validation");
        draw_both!(out, "validation", (900, 500), files, |root| line_chart(
            root,
            &title,
            "accuracy",
            &val_series
        ));
    }
    if job == "finetune" {
        if let Ok(report) = read_json(&dir.join("report.json")) {
            let names: Vec<String> = report["per_class"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m["class"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let matrix: Vec<Vec<u64>> =
                serde_json::from_value(report["confusion"].clone()).unwrap_or_default();
            if !names.is_empty() && matrix.len() == names.len() {
                draw_both!(out, "confusion", (900, 900), files, |root| confusion_chart(
                    root, &names, &matrix
                ));
            }
        }
    }
    Ok(PlotSummary { files })
}

/// `netfm forecast predict --plot`: series `s`'s recent history, the forecast's central
/// quantile and the band between its lowest and highest quantile, against hours from the
/// forecast origin; PNG or SVG by `out`'s extension.
pub fn forecast_chart(
    out: &std::path::Path,
    panel: &crate::forecast::series::Panel,
    s: usize,
    forecast: &[Vec<f64>],
    quantiles: &[f64],
) -> anyhow::Result<()> {
    register_font()?;
    let n = panel.len();
    let shown = n.min(2 * 86_400 / panel.step.max(1) as usize).max(1);
    let hours = |i: f64| i * panel.step as f64 / 3600.0;
    let history: Vec<(f64, f64)> = (n - shown..n)
        .map(|i| (hours(i as f64 - n as f64), panel.values[s][i]))
        .collect();
    let mid = quantiles.len() / 2;
    let at = |k: usize| hours(k as f64);
    let central: Vec<(f64, f64)> = forecast
        .iter()
        .enumerate()
        .map(|(k, q)| (at(k), q[mid]))
        .collect();
    let lo: Vec<(f64, f64)> = forecast
        .iter()
        .enumerate()
        .map(|(k, q)| (at(k), q[0]))
        .collect();
    let hi: Vec<(f64, f64)> = forecast
        .iter()
        .enumerate()
        .map(|(k, q)| (at(k), q[q.len() - 1]))
        .collect();
    let title = format!("{}: forecast", panel.names[s]);
    let band = format!(
        "p{:.0}-p{:.0}",
        quantiles[0] * 100.0,
        quantiles[quantiles.len() - 1] * 100.0
    );
    let ext = out.extension().and_then(|e| e.to_str());
    if ext != Some("png") && ext != Some("svg") {
        bail!("--plot {}: draw a .png or .svg", out.display());
    }
    super::forecast::write_whole(out, |tmp| {
        if ext == Some("png") {
            draw_forecast(
                BitMapBackend::new(tmp, (1000, 500)).into_drawing_area(),
                &title,
                &band,
                &history,
                &central,
                &lo,
                &hi,
            )
        } else {
            draw_forecast(
                SVGBackend::new(tmp, (1000, 500)).into_drawing_area(),
                &title,
                &band,
                &history,
                &central,
                &lo,
                &hi,
            )
        }
    })
}

/// The lines and band of [`forecast_chart`], drawn on `root`.
#[allow(clippy::too_many_arguments)]
fn draw_forecast<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    band: &str,
    history: &[(f64, f64)],
    central: &[(f64, f64)],
    lo: &[(f64, f64)],
    hi: &[(f64, f64)],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let all = history
        .iter()
        .chain(lo)
        .chain(hi)
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-3), (y0 - pad)..(y1 + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("hours from the forecast origin")
        .y_desc("load")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    let polygon: Vec<(f64, f64)> = lo.iter().copied().chain(hi.iter().rev().copied()).collect();
    chart
        .draw_series(std::iter::once(Polygon::new(
            polygon,
            LIGHT_ORANGE.filled(),
        )))
        .map_err(err)?
        .label(band.to_string())
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], LIGHT_ORANGE.filled()));
    for (name, pts, color) in [("history", history, BLUE), ("forecast", central, ORANGE)] {
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

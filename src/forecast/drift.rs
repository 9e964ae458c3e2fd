//! Forecasting through a failure: at interval `event` links fail, traffic reroutes, and the
//! surviving links' loads shift. Per model: the error in the 2 hours after the event on the
//! links whose load shifted by more than 20%, and the time until that error is back at its
//! level before the event.
//!
//! - **Shifted links**: those up after the event whose mean load over the 2 hours after it
//!   differs by more than 20% from the same hours without the failure.
//! - **Normalized error** of a forecast for link `l` at target time `τ`: `|y − ŷ| / m`, with
//!   `m` the link's mean actual load over the hour up to `τ` (a local scale: rerouting
//!   multiplies some loads, so errors are compared relative to the load of their time).
//! - **Before**: the mean normalized error of targets in the 12 hours before the event;
//!   **after**: of targets in the 2 hours from the event; **recovery**: the first time from
//!   the event at which the mean normalized error over the trailing 30 minutes of targets is
//!   at most 1.1× the before level (so 30 minutes is the earliest; not recovered within the
//!   data: `None`).
//! - Forecasts come from origins every interval, so every target time has one forecast per
//!   horizon step.

use super::backtest::{forecast_origin, Spec};
use super::baselines::Forecaster;
use super::series::Panel;
use serde::Serialize;

/// The failure scenario's result for one model and horizon step.
#[derive(Clone, Debug, Serialize)]
pub struct DriftRow {
    pub model: String,
    pub horizon: String,
    pub step: usize,
    pub week: String,
    pub shifted_links: Vec<String>,
    pub before: f64,
    pub after_2h: f64,
    /// Minutes from the event until the trailing half hour's error is back at 1.1× before.
    pub recovery_min: Option<f64>,
}

/// The links that shifted by more than `threshold` (relative) in the `window` intervals
/// from `event`, between the scenario with the failure and the one without.
pub fn shifted_links(
    failed: &Panel,
    normal: &Panel,
    event: usize,
    window: usize,
    threshold: f64,
) -> Vec<usize> {
    let end = (event + window).min(failed.len());
    (0..failed.values.len())
        .filter(|&l| {
            let a = &failed.values[l][event..end];
            let b = &normal.values[l][event..end];
            if a.iter().any(|x| x.is_nan()) {
                return false;
            }
            let (ma, mb) = (mean(a), mean(b));
            mb > 0.0 && ((ma / mb) - 1.0).abs() > threshold
        })
        .collect()
}

fn mean(x: &[f64]) -> f64 {
    let v: Vec<f64> = x.iter().copied().filter(|x| !x.is_nan()).collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Runs one (already fitted) model through the event. `links`: the shifted links;
/// `before`: intervals of targets before the event for the reference level; `adapt`
/// tells the model where the event is (models that adapt use it).
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &dyn Forecaster,
    panel: &Panel,
    links: &[usize],
    event: usize,
    before: usize,
    spec: &Spec,
    week: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Vec<DriftRow>> {
    let hour = (3600 / panel.step).max(1) as usize;
    let horizon = spec.horizon;
    let first_target = event - before;
    // Origins so that every target in [first_target, len) has a forecast at every step.
    let origins: Vec<usize> = (first_target + 1 - horizon.min(first_target)..panel.len()).collect();
    let sub = Panel {
        start: panel.start,
        step: panel.step,
        names: links.iter().map(|&l| panel.names[l].clone()).collect(),
        values: links.iter().map(|&l| panel.values[l].clone()).collect(),
    };
    // err[k][link][τ]: the normalized error of the step-k forecast for target τ.
    let n = panel.len();
    let mut err = vec![vec![vec![f64::NAN; n]; links.len()]; spec.steps.len()];
    let total = origins.len() as u64;
    for (i, &o) in origins.iter().enumerate() {
        let fc = forecast_origin(model, &sub, o, spec, model.parallel())?;
        for (li, f) in fc.iter().enumerate() {
            let y = &sub.values[li];
            for (k, &step) in spec.steps.iter().enumerate() {
                let tau = o + step - 1;
                if tau >= n || tau < first_target || y[tau].is_nan() {
                    continue;
                }
                let from = (tau + 1).saturating_sub(hour);
                let m = mean(&y[from..=tau]);
                if m > 0.0 {
                    err[k][li][tau] = (y[tau] - f[step - 1][f[step - 1].len() / 2]).abs() / m;
                }
            }
        }
        progress(i as u64 + 1, total);
    }
    let mut rows = Vec::new();
    for (k, &step) in spec.steps.iter().enumerate() {
        let avg = |from: usize, to: usize| -> f64 {
            let v: Vec<f64> = (from..to.min(n))
                .flat_map(|t| err[k].iter().map(move |e| e[t]))
                .filter(|x| !x.is_nan())
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let before_level = avg(first_target, event);
        let after = avg(event, event + 2 * hour);
        let half = (hour / 2).max(1);
        let recovery = (event + half..=n)
            .find(|&t| avg(t - half, t) <= 1.1 * before_level)
            .map(|t| (t - event) as f64 * panel.step as f64 / 60.0);
        rows.push(DriftRow {
            model: model.name().to_string(),
            horizon: super::backtest::duration_label(step as i64 * panel.step),
            step,
            week: week.to_string(),
            shifted_links: sub.names.clone(),
            before: before_level,
            after_2h: after,
            recovery_min: recovery,
        });
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn table(rows: &[DriftRow]) -> String {
    let mut s = String::from(
        "| week | horizon | model | error before | error 2 h after | recovery |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {} |\n",
            r.week,
            r.horizon,
            r.model,
            r.before,
            r.after_2h,
            r.recovery_min
                .map_or("not within the data".to_string(), |m| format!("{m:.0} min"))
        ));
    }
    s
}

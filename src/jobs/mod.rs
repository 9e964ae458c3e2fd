//! The model jobs, one module each: what a user runs to turn tokenized flows into a model
//! and a model into predictions. Each job takes its parsed arguments (from [`crate::cli`]),
//! does its work with the shared parts ([`crate::train`], [`crate::runtime`],
//! [`crate::dataset`]), shows progress, and returns its summary.

pub mod embed;
pub mod finetune;
pub mod flow_output;
pub mod forecast;
pub mod import;
pub mod labels;
pub mod model;
pub mod plot;
pub mod predict;
pub mod pretrain;

use indicatif::{ProgressBar, ProgressStyle};

/// A step progress bar on stderr (hidden with `quiet` or when stderr is not a terminal).
pub(crate) fn step_bar(total: u64, done: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(done);
    bar
}

/// A line above the progress bar, or on stderr where the bar is hidden (not a terminal);
/// nothing with `quiet`.
pub(crate) fn say(bar: &ProgressBar, quiet: bool, text: String) {
    if quiet {
        return;
    }
    if bar.is_hidden() {
        eprintln!("{text}");
    } else {
        bar.println(text);
    }
}

/// `x` with thousands separators.
pub(crate) fn thousands(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

//! netfm: packets to predictions. See docs/ARCHITECTURE.md for the data flow.

pub mod capture;
pub mod cli;
pub mod commands;
pub mod dataset;
pub mod decode;
pub mod flow;
pub mod forecast;
pub mod jobs;
pub mod pipeline;
pub mod process;
pub mod runtime;
pub mod summary;
pub mod train;

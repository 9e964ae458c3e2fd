//! netfm: packets to predictions. See docs/ARCHITECTURE.md for the data flow.

pub mod capture;
pub mod dataset;
pub mod decode;
pub mod flow;
pub mod summary;
pub mod cli;
pub mod commands;
pub mod pipeline;

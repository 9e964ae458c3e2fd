//! Dataset sinks: native Parquet (zstd, Hive-style parts) in [`parquet`], and netFound's
//! Arrow IPC schema in [`netfound_ipc`]. Both share the burst columns of [`burst_columns`].

pub mod burst_columns;
pub mod netfound_ipc;
pub mod parquet;
pub mod reader;

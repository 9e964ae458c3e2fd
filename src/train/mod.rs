//! Training-side data handling: turning tokenized flows into the batches the model graphs
//! take ([`collate`]).

pub mod collate;

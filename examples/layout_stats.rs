//! The cost side of batch layouts, without a model: one epoch of a dataset drawn as
//! `netfm pretrain` draws it (shuffle buffer, optional length-sorted pools), collated in the
//! dense and the packed layout, counting the token slots each computes per real token
//! (field tokens plus one CLS per burst).
//!
//! `cargo run --release --example layout_stats -- DATASET... [--size small] [--batch 32]
//!  [--seed 1]`
//! Prints one JSON object: per configuration, batches, real tokens, slots and their ratio.

use netfm::train::collate::{pretrain_batch, Layout, Masking};
use netfm::train::data::{step_rng, EpochStream, StreamConfig, Take};
use netfm_models::{DType, InputLayout, ModelConfig};
use netfm_tokenizer::TokenizedFlow;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut data = Vec::new();
    let (mut size, mut batch, mut seed) = ("small".to_string(), 32usize, 1u64);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--size" => size = args[i + 1].clone(),
            "--batch" => batch = args[i + 1].parse()?,
            "--seed" => seed = args[i + 1].parse()?,
            other => {
                data.push(PathBuf::from(other));
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    anyhow::ensure!(
        !data.is_empty(),
        "usage: layout_stats DATASET... [--size S] [--batch N]"
    );
    let catalog = netfm::train::data::Catalog::open(&data)?;
    let files = catalog.paths();
    let mut out = serde_json::Map::new();
    for (name, input, pools) in [
        ("dense_random", InputLayout::Dense, 1),
        ("dense_bucketed", InputLayout::Dense, 16),
        ("packed_random", InputLayout::Packed, 1),
        ("packed_bucketed", InputLayout::Packed, 16),
    ] {
        let cfg = ModelConfig {
            layout: input,
            ..ModelConfig::named(&size)?
        };
        let lay = Layout::of(&cfg, DType::F32);
        let stream = StreamConfig {
            batch_size: batch,
            shuffle_buffer: 4096,
            pool_batches: pools,
            seed,
        };
        let (mut batches, mut real, mut slots) = (0u64, 0u64, 0u64);
        for (step, flows) in EpochStream::new(&files, Take::All, &stream, 0).enumerate() {
            let flows = flows?;
            let refs: Vec<&TokenizedFlow> = flows.iter().map(|f| &f.flow).collect();
            let mut rng = step_rng(seed, step as u64 + 1);
            let b = pretrain_batch(&refs, &lay, &Masking::default(), &mut rng);
            batches += 1;
            real += b.real_tokens() as u64;
            slots += b.slots as u64;
        }
        out.insert(
            name.into(),
            serde_json::json!({
                "batches": batches, "real_tokens": real, "slots": slots,
                "slots_per_real_token": slots as f64 / real.max(1) as f64,
            }),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

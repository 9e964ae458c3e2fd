//! A loaded inference model: checks that it is a netfm `inference` graph built for this
//! tokenizer's vocabulary, then turns batches of flows into embeddings and head outputs.

use super::{host, session_from_bytes, RuntimeOptions};
use crate::train::collate::{inference_batch, Layout};
use anyhow::{bail, Context};
use netfm_models::export::meta_keys;
use netfm_models::proto::ModelProto;
use netfm_models::{DType, ModelConfig, Tensor, VocabSpec};
use netfm_tokenizer::TokenizedFlow;
use ort::session::Session;
use std::collections::HashMap;

/// The config of a netfm model file, checked against what this netfm tokenizes.
pub fn model_config(model: &ModelProto, kind: &str) -> anyhow::Result<(ModelConfig, DType)> {
    let found = model.metadata(meta_keys::KIND);
    if found != Some(kind) {
        bail!(
            "not a netfm {kind} model (its {} is {found:?})",
            meta_keys::KIND
        );
    }
    let cfg = ModelConfig::from_json(
        model
            .metadata(meta_keys::CONFIG)
            .context("model without a config")?,
    )
    .context("reading the model's config")?;
    cfg.validate().context("the model's config")?;
    let vocab: VocabSpec = serde_json::from_str(
        model
            .metadata(meta_keys::VOCAB)
            .context("model without a vocabulary")?,
    )
    .context("reading the model's vocabulary")?;
    let ours = VocabSpec::netfound();
    if vocab != ours || cfg.vocab != ours {
        bail!(
            "the model was built for a different tokenizer vocabulary ({vocab:?}); this netfm tokenizes into {ours:?}"
        );
    }
    let dtype: DType = serde_json::from_str(model.metadata(meta_keys::DTYPE).unwrap_or("\"f32\""))
        .context("reading the model's dtype")?;
    Ok((cfg, dtype))
}

/// An inference session over a netfm model.
pub struct Encoder {
    session: Session,
    pub config: ModelConfig,
    pub layout: Layout,
}

impl Encoder {
    pub fn from_bytes(opts: &RuntimeOptions, bytes: &[u8]) -> anyhow::Result<Encoder> {
        let model = ModelProto::from_bytes(bytes).context("not an ONNX model")?;
        let (config, dtype) = model_config(&model, "inference")?;
        let session = session_from_bytes(opts, bytes)?;
        let layout = Layout::of(&config, dtype);
        Ok(Encoder {
            session,
            config,
            layout,
        })
    }

    /// Embeddings and head outputs for `flows`, by output name.
    pub fn run(&mut self, flows: &[&TokenizedFlow]) -> anyhow::Result<HashMap<String, Tensor>> {
        let batch = inference_batch(flows, &self.layout);
        self.run_batch(&batch.feeds())
    }

    /// Runs prepared input tensors; those the model does not take (a batch's targets) are
    /// left out.
    pub fn run_batch(
        &mut self,
        feeds: &[(&str, &Tensor)],
    ) -> anyhow::Result<HashMap<String, Tensor>> {
        let wanted: Vec<String> = self
            .session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let feeds: Vec<(&str, &Tensor)> = feeds
            .iter()
            .copied()
            .filter(|(n, _)| wanted.iter().any(|w| w == n))
            .collect();
        host::run(&mut self.session, &feeds)
    }
}

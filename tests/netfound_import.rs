//! `netfm model import --netfound`: netFound's test-size checkpoint (netFound's own
//! `save_pretrained` layout, `../shared/conformance/netfound-model/test-size`) imported as a
//! language model and, with its fine-tuning head, as a fine-tuned model; and every way a
//! checkpoint folder can be wrong, each refused with the key named.

mod common;

use common::{fails, json_of, netfm, ok};
use netfm_models::checkpoint::Checkpoint;
use netfm_models::safetensors;
use netfm_models::{Data, Tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn model_dir() -> PathBuf {
    let dir = common::conformance_dir().join("../netfound-model/test-size");
    assert!(
        dir.join("model/config.json").is_file(),
        "netFound model conformance data not found at {}",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    safetensors::parse(&std::fs::read(path).unwrap())
        .unwrap()
        .tensors
}

fn config() -> Value {
    serde_json::from_slice(&std::fs::read(model_dir().join("model/config.json")).unwrap()).unwrap()
}

/// A checkpoint folder with `config` and `tensors` (as `save_pretrained` writes one).
fn folder(root: &Path, name: &str, config: &Value, tensors: &BTreeMap<String, Tensor>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), &meta);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    dir
}

fn import(src: &Path, out: &Path) -> Value {
    json_of(&ok(netfm()
        .args(["model", "import", "--json", "--netfound"])
        .arg(src)
        .arg("--out")
        .arg(out)))
}

fn import_fails(src: &Path, out: &Path) -> String {
    fails(
        netfm()
            .args(["model", "import", "--netfound"])
            .arg(src)
            .arg("--out")
            .arg(out),
    )
}

#[test]
fn imports_the_language_model_with_every_weight_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lm");
    let s = import(&model_dir().join("model"), &out);
    assert_eq!(s["params"], 4_502_087, "{s}");
    assert_eq!(s["kind"], "language-model");
    assert_eq!(s["tensors"], 80);
    assert_eq!(
        s["rotary_is_sinusoid"], false,
        "netFound's tables are random"
    );
    let ck = Checkpoint::from_bytes(&std::fs::read(out.join("checkpoint.safetensors")).unwrap())
        .unwrap();
    let src = read(&model_dir().join("model/model.safetensors"));
    assert_eq!(ck.params.len(), src.len());
    for (k, t) in &src {
        assert_eq!(ck.params.get(k), Some(t), "{k}");
    }
    let nf = ck.config.netfound.as_ref().expect("a netFound model");
    assert!(nf.lm_heads);
    assert_eq!((nf.hidden, nf.layers, nf.intermediate), (64, 2, 96));
    assert_eq!(ck.config.burst_len, 73);
    let run: Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["job"], "import");
    assert!(out.join("netfound_config.json").is_file());
    // An occupied folder is refused; --overwrite replaces it.
    let e = import_fails(&model_dir().join("model"), &out);
    assert!(e.contains("already holds"), "{e}");
    ok(netfm()
        .args(["model", "import", "--overwrite", "--netfound"])
        .arg(model_dir().join("model"))
        .arg("--out")
        .arg(&out));
}

/// A fine-tuned checkpoint: `base_transformer.*` plus the fine-tuning head's keys.
fn finetuned(root: &Path) -> PathBuf {
    let mut tensors: BTreeMap<String, Tensor> = read(&model_dir().join("model/model.safetensors"))
        .into_iter()
        .filter(|(k, _)| k.starts_with("base_transformer."))
        .collect();
    tensors.extend(read(&model_dir().join("finetune_head.safetensors")));
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(model_dir().join("finetune_config.json")).unwrap())
            .unwrap();
    cfg["architectures"] = serde_json::json!(["netFoundFinetuningModel"]);
    folder(root, "finetuned", &cfg, &tensors)
}

#[test]
fn imports_a_fine_tuned_model_with_its_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = finetuned(tmp.path());
    let out = tmp.path().join("ft");
    let s = import(&src, &out);
    assert_eq!(s["kind"], "fine-tuned");
    assert_eq!(
        s["classes"],
        serde_json::json!(["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3", "LABEL_4"])
    );
    // The base transformer (4,427,520) plus the head (12,869).
    assert_eq!(s["params"], 4_427_520 + 12_869, "{s}");
    let ck = Checkpoint::from_bytes(&std::fs::read(out.join("checkpoint.safetensors")).unwrap())
        .unwrap();
    assert_eq!(ck.config.num_classes, 5);
    assert!(ck.params.contains_key("classifier.weight"));
    assert!(!ck.params.contains_key("lm_head.bias"));
}

#[test]
fn half_precision_checkpoints_are_widened() {
    let tmp = tempfile::tempdir().unwrap();
    // BF16 is the upper half of F32: write the source as BF16 and compare with the
    // truncated F32 values.
    let src = read(&model_dir().join("model/model.safetensors"));
    let dir = tmp.path().join("bf16");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config().to_string()).unwrap();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (k, t) in &src {
        let Data::F32(v) = &t.data else { panic!() };
        let s = data.len();
        for x in v {
            data.extend_from_slice(&((x.to_bits() >> 16) as u16).to_le_bytes());
        }
        header.insert(
            k.clone(),
            serde_json::json!({"dtype": "BF16", "shape": t.dims, "data_offsets": [s, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&Value::Object(header)).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(data);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let s = import(&dir, &tmp.path().join("out"));
    assert_eq!(s["source_dtypes"]["BF16"], 80, "{s}");
    let ck = Checkpoint::from_bytes(
        &std::fs::read(tmp.path().join("out/checkpoint.safetensors")).unwrap(),
    )
    .unwrap();
    let k = "base_transformer.embeddings.compressEmbeddings.weight";
    let (Data::F32(a), Data::F32(b)) = (&ck.params[k].data, &src[k].data) else {
        panic!()
    };
    assert!(a
        .iter()
        .zip(b)
        .all(|(x, y)| x.to_bits() == y.to_bits() & 0xffff_0000));
}

#[test]
fn wrong_checkpoints_are_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let base = read(&model_dir().join("model/model.safetensors"));
    let out = tmp.path().join("out");
    let cases: Vec<(&str, Value, BTreeMap<String, Tensor>, &str)> = vec![
        {
            let mut t = base.clone();
            t.remove("base_transformer.encoder.flow_positions.weight");
            (
                "no-rotary",
                config(),
                t,
                "base_transformer.encoder.flow_positions.weight",
            )
        },
        {
            let mut t = base.clone();
            t.insert(
                "base_transformer.encoder.layer.0.flow_encoder.mlp.Wo.weight".into(),
                Tensor {
                    dims: vec![64, 95],
                    data: Data::F32(vec![0.0; 64 * 95]),
                },
            );
            (
                "shape",
                config(),
                t,
                "layer.0.flow_encoder.mlp.Wo.weight: shape [64, 95]",
            )
        },
        {
            let mut t = base.clone();
            t.insert(
                "base_transformer.encoder.layer.0.burst_encoder.attention.attn.Wqkv.weight".into(),
                Tensor {
                    dims: vec![1],
                    data: Data::F32(vec![0.0]),
                },
            );
            ("unknown", config(), t, "attention.attn.Wqkv.weight: a key")
        },
        {
            let mut c = config();
            c["use_flash_attn"] = Value::Bool(true);
            ("flash", c, base.clone(), "use_flash_attn")
        },
        {
            let mut c = config();
            c["roformer"] = Value::Bool(false);
            ("roformer", c, base.clone(), "roformer")
        },
        {
            let mut c = config();
            c["tie_word_embeddings"] = Value::Bool(false);
            ("untied", c, base.clone(), "tie_word_embeddings")
        },
        {
            let mut c = config();
            c["hidden_size"] = Value::from(128);
            ("hidden", c, base.clone(), "needs [")
        },
        {
            let mut t = base.clone();
            t.insert(
                "base_transformer.embeddings.LayerNorm.bias".into(),
                Tensor {
                    dims: vec![64],
                    data: Data::F32([f32::NAN].repeat(64)),
                },
            );
            ("nan", config(), t, "LayerNorm.bias: value NaN")
        },
    ];
    for (name, cfg, tensors, want) in cases {
        let src = folder(tmp.path(), name, &cfg, &tensors);
        let e = import_fails(&src, &out);
        assert!(e.contains(want), "{name}: {e}");
        assert!(!out.exists(), "{name}: nothing is written");
    }
    // Not a checkpoint folder at all.
    let e = import_fails(tmp.path().join("absent").as_path(), &out);
    assert!(e.contains("not a folder"), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("config.json"), config().to_string()).unwrap();
    let e = import_fails(&empty, &out);
    assert!(e.contains("no model.safetensors"), "{e}");
    std::fs::write(
        empty.join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0{\"a\":",
    )
    .unwrap();
    let e = import_fails(&empty, &out);
    assert!(e.contains("safetensors"), "{e}");
}

#[test]
fn sharded_checkpoints_and_tolerated_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let base = read(&model_dir().join("model/model.safetensors"));
    let dir = tmp.path().join("sharded");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config().to_string()).unwrap();
    let (a, b): (BTreeMap<_, _>, BTreeMap<_, _>) = base
        .clone()
        .into_iter()
        .partition(|(k, _)| k.starts_with("base_transformer.encoder"));
    let mut b = b;
    // Keys netFound itself ignores or aliases.
    b.insert("lm_head.decoder.bias".into(), base["lm_head.bias"].clone());
    b.insert(
        "base_transformer.encoder.layer.0.position_embeddings.weight".into(),
        base["base_transformer.encoder.layer.1.position_embeddings.weight"].clone(),
    );
    let meta = BTreeMap::new();
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", &a),
        ("model-00002-of-00002.safetensors", &b),
    ] {
        std::fs::write(
            dir.join(file),
            safetensors::serialize(part.iter().map(|(k, t)| (k.as_str(), t)), &meta),
        )
        .unwrap();
        for k in part.keys() {
            map.insert(k.clone(), Value::String(file.into()));
        }
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let s = import(&dir, &tmp.path().join("out"));
    assert_eq!(s["params"], 4_502_087);
    let tolerated = s["tolerated"].to_string();
    assert!(tolerated.contains("lm_head.decoder.bias"), "{tolerated}");
    assert!(
        tolerated.contains("layer.0.position_embeddings"),
        "{tolerated}"
    );
}

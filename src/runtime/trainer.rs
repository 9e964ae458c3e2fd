//! Runs a `train_step` graph step after step with the parameters and AdamW moments kept in
//! two buffer sets: set A feeds the step and set B receives `new.*`, then the roles swap.
//! Two IoBindings, one per direction, are built once; a step binds only the batch and the
//! four step scalars, so the parameters are never copied between steps.

use super::host;
use super::{session_from_bytes, Device, RuntimeOptions};
use anyhow::{bail, Context};
use netfm_models::export::{meta_keys, ParamEntry};
use netfm_models::proto::ModelProto;
use netfm_models::{DType, Data, Tensor};
use ort::memory::{AllocationDevice, Allocator};
use ort::session::IoBinding;
use ort::session::Session;
use ort::value::{DynTensor, TensorElementType};
use std::collections::HashMap;

/// The learning-rate schedule's inputs (see netfm-models' `optim::scheduled_lr`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

/// What one step reported.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The update's number, from 1.
    pub step: u64,
    /// Loss terms by output name, `loss` (the total) first.
    pub losses: Vec<(String, f64)>,
    pub grad_norm: f64,
    pub lr: f64,
}

impl StepReport {
    pub fn loss(&self) -> f64 {
        self.losses[0].1
    }
}

/// The AdamW state of a model: moments per parameter and the number of updates done.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub m: HashMap<String, Tensor>,
    pub v: HashMap<String, Tensor>,
    pub step: u64,
}

/// What a train-step model records about itself.
#[derive(Clone, Debug)]
pub struct TrainGraphInfo {
    pub params: Vec<ParamEntry>,
    pub dtype: DType,
    pub loss_names: Vec<String>,
}

impl TrainGraphInfo {
    pub fn read(model: &ModelProto) -> anyhow::Result<TrainGraphInfo> {
        if model.metadata(meta_keys::KIND) != Some("train_step") {
            bail!(
                "not a netfm train_step model (its {} is {:?})",
                meta_keys::KIND,
                model.metadata(meta_keys::KIND)
            );
        }
        let params: Vec<ParamEntry> = serde_json::from_str(
            model
                .metadata(meta_keys::PARAMS)
                .context("train_step model without a parameter list")?,
        )
        .context("reading the train_step model's parameter list")?;
        let dtype: DType =
            serde_json::from_str(model.metadata(meta_keys::DTYPE).unwrap_or("\"f32\""))
                .context("reading the train_step model's dtype")?;
        let graph = model
            .graph
            .as_ref()
            .context("train_step model without a graph")?;
        let loss_names = graph
            .output
            .iter()
            .map(|o| o.name.clone())
            .filter(|n| n == "loss" || n.starts_with("loss_"))
            .collect();
        Ok(TrainGraphInfo {
            params,
            dtype,
            loss_names,
        })
    }
}

/// A train-step session and its two state buffer sets.
pub struct Trainer {
    session: Session,
    bindings: [IoBinding; 2],
    /// `sets[s][3·i + k]`: parameter i's value (k = 0), first moment (1), second moment (2).
    sets: [Vec<DynTensor>; 2],
    scalars: Vec<(String, DynTensor)>,
    info: TrainGraphInfo,
    device: Device,
    cur: usize,
    step: u64,
}

fn element_type(dtype: DType) -> TensorElementType {
    match dtype {
        DType::F64 => TensorElementType::Float64,
        DType::I64 => TensorElementType::Int64,
        DType::Bool => TensorElementType::Bool,
        DType::F32 => TensorElementType::Float32,
    }
}

fn zeros(dtype: DType, dims: &[i64]) -> Tensor {
    let n: i64 = dims.iter().product();
    let data = match dtype {
        DType::F64 => Data::F64(vec![0.0; n as usize]),
        _ => Data::F32(vec![0.0; n as usize]),
    };
    Tensor {
        dims: dims.to_vec(),
        data,
    }
}

impl Trainer {
    /// A trainer for `train_step` (ONNX bytes from netfm-models) starting from `params`
    /// and, if given, an optimizer state (else zero moments at step 0).
    pub fn new(
        opts: &RuntimeOptions,
        train_step: &[u8],
        params: &HashMap<String, Tensor>,
        state: Option<&OptimizerState>,
    ) -> anyhow::Result<Trainer> {
        let model = ModelProto::from_bytes(train_step).context("decoding the train_step model")?;
        let info = TrainGraphInfo::read(&model)?;
        let session = session_from_bytes(opts, train_step)?;
        let allocator = Allocator::default();
        let mut sets: [Vec<DynTensor>; 2] = [Vec::new(), Vec::new()];
        let mut problems = Vec::new();
        for p in &info.params {
            let check = |t: Option<&Tensor>| -> Option<Tensor> {
                t.filter(|t| t.dims == p.dims && t.data.dtype() == info.dtype)
                    .cloned()
            };
            let value = check(params.get(&p.name));
            let (m, v) = match state {
                Some(s) => (check(s.m.get(&p.name)), check(s.v.get(&p.name))),
                None => (
                    Some(zeros(info.dtype, &p.dims)),
                    Some(zeros(info.dtype, &p.dims)),
                ),
            };
            let found = |t: Option<&Tensor>| {
                t.map(|t| format!("{:?} {:?}", t.data.dtype(), t.dims))
                    .unwrap_or_else(|| "nothing".into())
            };
            let (Some(value), Some(m), Some(v)) = (value, m, v) else {
                problems.push(format!(
                    "{}: expects {:?} {:?}, found {}",
                    p.name,
                    info.dtype,
                    p.dims,
                    found(params.get(&p.name))
                ));
                continue;
            };
            for t in [&value, &m, &v] {
                for set in sets.iter_mut() {
                    let mut buf =
                        DynTensor::new(&allocator, element_type(info.dtype), t.dims.clone())
                            .with_context(|| format!("allocating {}", p.name))?;
                    host::write_into(&mut buf, t)?;
                    set.push(buf);
                }
            }
        }
        if !problems.is_empty() {
            bail!(
                "the parameters (or optimizer state) do not fit this train_step model:\n  {}",
                problems.join("\n  ")
            );
        }
        let mut sets = sets;
        if opts.device != Device::Cpu {
            sets = move_to_device(sets, opts.device)?;
        }
        let mut scalars = Vec::new();
        let graph = model.graph.as_ref().context("no graph")?;
        for o in &graph.output {
            if !o.name.starts_with("new.") {
                let t = DynTensor::new(&allocator, element_type(info.dtype), Vec::<i64>::new())
                    .with_context(|| format!("allocating output {}", o.name))?;
                scalars.push((o.name.clone(), t));
            }
        }
        let mut bindings = [session.create_binding()?, session.create_binding()?];
        for (dir, binding) in bindings.iter_mut().enumerate() {
            let (src, dst) = (dir, 1 - dir);
            for (i, p) in info.params.iter().enumerate() {
                let names = [
                    p.name.clone(),
                    format!("m.{}", p.name),
                    format!("v.{}", p.name),
                ];
                for (k, name) in names.iter().enumerate() {
                    binding
                        .bind_input(name.as_str(), &sets[src][3 * i + k])
                        .with_context(|| format!("binding input {name}"))?;
                    binding
                        .bind_output(format!("new.{name}"), &mut sets[dst][3 * i + k])
                        .with_context(|| format!("binding output new.{name}"))?;
                }
            }
            for (name, t) in scalars.iter_mut() {
                binding
                    .bind_output(name.as_str(), &mut *t)
                    .with_context(|| format!("binding output {name}"))?;
            }
        }
        let step = state.map_or(0, |s| s.step);
        Ok(Trainer {
            session,
            bindings,
            sets,
            scalars,
            info,
            device: opts.device,
            cur: 0,
            step,
        })
    }

    /// Updates done so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn info(&self) -> &TrainGraphInfo {
        &self.info
    }

    /// One update on `batch` (named tensors matching the graph's batch inputs).
    pub fn step(
        &mut self,
        batch: &[(&str, &Tensor)],
        lr: &LrSchedule,
    ) -> anyhow::Result<StepReport> {
        let next = self.step + 1;
        let dtype = self.info.dtype;
        let scalar = |x: f64| Tensor {
            dims: vec![],
            data: Data::scalar(dtype, x),
        };
        let step_t = Tensor {
            dims: vec![],
            data: Data::I64(vec![next as i64]),
        };
        let sched = [
            ("step", step_t),
            ("lr", scalar(lr.peak)),
            ("warmup_steps", scalar(lr.warmup_steps as f64)),
            ("total_steps", scalar(lr.total_steps as f64)),
        ];
        let binding = &mut self.bindings[self.cur];
        for (name, t) in batch
            .iter()
            .copied()
            .chain(sched.iter().map(|(n, t)| (*n, t)))
        {
            let v = host::to_value(t).with_context(|| format!("batch input {name}"))?;
            binding
                .bind_input(name, &v)
                .with_context(|| format!("binding batch input {name}"))?;
        }
        let outputs = self
            .session
            .run_binding(&self.bindings[self.cur])
            .with_context(|| format!("running train step {next}"))?;
        drop(outputs);
        let mut read = HashMap::new();
        for (name, t) in &self.scalars {
            let x = host::scalar(&host::from_value(t)?)?;
            read.insert(name.clone(), x);
        }
        let losses: Vec<(String, f64)> = self
            .info
            .loss_names
            .iter()
            .map(|n| (n.clone(), read[n]))
            .collect();
        if !losses[0].1.is_finite() {
            bail!(
                "train step {next}: the loss is {} (lower the learning rate?)",
                losses[0].1
            );
        }
        self.cur = 1 - self.cur;
        self.step = next;
        Ok(StepReport {
            step: next,
            losses,
            grad_norm: read.get("grad_norm").copied().unwrap_or(f64::NAN),
            lr: read.get("lr_used").copied().unwrap_or(f64::NAN),
        })
    }

    fn read_set(&self, k: usize) -> anyhow::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, p) in self.info.params.iter().enumerate() {
            let t = &self.sets[self.cur][3 * i + k];
            let host_t = if self.device == Device::Cpu {
                host::from_value(t)?
            } else {
                host::from_value(&t.to(AllocationDevice::CPU, 0)?)?
            };
            out.insert(p.name.clone(), host_t);
        }
        Ok(out)
    }

    /// The current parameters (copied out).
    pub fn params(&self) -> anyhow::Result<HashMap<String, Tensor>> {
        self.read_set(0)
    }

    /// The current optimizer state (copied out).
    pub fn optimizer_state(&self) -> anyhow::Result<OptimizerState> {
        Ok(OptimizerState {
            m: self.read_set(1)?,
            v: self.read_set(2)?,
            step: self.step,
        })
    }
}

fn move_to_device(
    sets: [Vec<DynTensor>; 2],
    device: Device,
) -> anyhow::Result<[Vec<DynTensor>; 2]> {
    let Device::Cuda(id) = device else {
        return Ok(sets);
    };
    let [a, b] = sets;
    let mv = |set: Vec<DynTensor>| -> anyhow::Result<Vec<DynTensor>> {
        set.iter()
            .map(|t| {
                t.to(AllocationDevice::CUDA, id as i32)
                    .context("copying training state to the GPU")
            })
            .collect()
    };
    Ok([mv(a)?, mv(b)?])
}

//! Parameters: how a model definition asks for them ([`ParamStore`]), the three ways a graph
//! gets them (inputs of a train/eval graph, initializers of an inference graph, or just a
//! list of their specs), and their deterministic initialisation.

use crate::graph::{fixed, DType, Data, Graph, Tensor, V};
use std::collections::HashMap;

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    Zeros,
    Ones,
}

/// One parameter of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub dims: Vec<i64>,
    pub init: Init,
    /// AdamW's weight decay applies (matrices and embeddings).
    pub decay: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.dims.iter().product::<i64>() as usize
    }
}

/// Where a model definition's parameters come from.
pub trait ParamStore {
    fn param(&mut self, g: &mut Graph, spec: ParamSpec) -> V;
}

/// Parameters as graph inputs named after the parameter (train-step and eval graphs).
#[derive(Default)]
pub struct InputParams {
    pub specs: Vec<ParamSpec>,
    pub values: Vec<V>,
}

impl ParamStore for InputParams {
    fn param(&mut self, g: &mut Graph, spec: ParamSpec) -> V {
        let v = g.input(&spec.name, g.float, fixed(&spec.dims));
        self.specs.push(spec);
        self.values.push(v);
        v
    }
}

/// Train-step and eval graphs where some parameters are fixed: those in `frozen` are baked
/// in as initializers (no gradient, no update), the others are inputs as in [`InputParams`].
pub struct PartlyFrozen<'a> {
    pub trainable: InputParams,
    pub frozen: &'a HashMap<String, Tensor>,
    /// Frozen parameters whose value was missing or of the wrong shape.
    pub unfit: Vec<String>,
}

impl<'a> PartlyFrozen<'a> {
    pub fn new(frozen: &'a HashMap<String, Tensor>) -> PartlyFrozen<'a> {
        PartlyFrozen {
            trainable: InputParams::default(),
            frozen,
            unfit: Vec::new(),
        }
    }
}

impl ParamStore for PartlyFrozen<'_> {
    fn param(&mut self, g: &mut Graph, spec: ParamSpec) -> V {
        match self.frozen.get(&spec.name) {
            Some(t) if t.dims == spec.dims && t.data.dtype() == g.float => {
                g.initializer(&spec.name, t.clone())
            }
            Some(_) => {
                self.unfit.push(spec.name.clone());
                self.trainable.param(g, spec)
            }
            None => self.trainable.param(g, spec),
        }
    }
}

/// Parameters as initializers holding given values (inference graphs).
pub struct InitializerParams<'a> {
    pub values: &'a HashMap<String, Tensor>,
    pub missing: Vec<String>,
    pub wrong_shape: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl<'a> InitializerParams<'a> {
    pub fn new(values: &'a HashMap<String, Tensor>) -> InitializerParams<'a> {
        InitializerParams {
            values,
            missing: Vec::new(),
            wrong_shape: Vec::new(),
        }
    }
}

impl ParamStore for InitializerParams<'_> {
    fn param(&mut self, g: &mut Graph, spec: ParamSpec) -> V {
        match self.values.get(&spec.name) {
            Some(t) if t.dims == spec.dims && t.data.dtype() == g.float => {
                g.initializer(&spec.name, t.clone())
            }
            found => {
                match found {
                    None => self.missing.push(spec.name.clone()),
                    Some(t) => self.wrong_shape.push((
                        spec.name.clone(),
                        spec.dims.clone(),
                        t.dims.clone(),
                    )),
                }
                // Keep building so that every problem is reported at once.
                g.input(&spec.name, g.float, fixed(&spec.dims))
            }
        }
    }
}

/// splitmix64: a small, well-mixed generator for deterministic initialisation.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// FNV-1a of a name, to give each parameter its own stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Initial values of `specs` from `seed`; each parameter's values depend only on the seed and
/// its name, so adding a head leaves the others unchanged.
pub fn init_params(specs: &[ParamSpec], seed: u64, dtype: DType) -> HashMap<String, Tensor> {
    specs
        .iter()
        .map(|s| {
            let n = s.numel();
            let mut rng = SplitMix64(seed ^ name_hash(&s.name));
            let vals: Vec<f64> = match s.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Normal(std) => (0..n).map(|_| rng.normal() * std).collect(),
            };
            let data = match dtype {
                DType::F64 => Data::F64(vals),
                _ => Data::F32(vals.into_iter().map(|x| x as f32).collect()),
            };
            (
                s.name.clone(),
                Tensor {
                    dims: s.dims.clone(),
                    data,
                },
            )
        })
        .collect()
}

//! A small typed graph builder over standard ONNX operators.
//!
//! Every value has a dtype and a shape known at build time; a dimension is a monomial such as
//! `12`, `batch` or `12*batch`, so shapes with a symbolic batch size still propagate exactly
//! through reshapes. Builder methods check their operands and panic on a mismatch: a shape
//! error here is a bug in a model definition, never a property of user input (configurations
//! are validated before a graph is built).
//!
//! Values are appended in topological order; [`crate::autodiff`] appends the backward pass to
//! the same graph and [`Graph::to_model`] writes only what the outputs need.

use crate::proto::{
    attribute_type, data_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use std::collections::HashMap;
use std::fmt;

/// ONNX IR version written (ONNX Runtime 1.31 reads at most 13).
pub const IR_VERSION: i64 = 10;
/// Default-domain opset written.
pub const OPSET: i64 = 18;

/// Element types a graph value can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
    I64,
    Bool,
}

impl DType {
    pub fn onnx(self) -> i32 {
        match self {
            DType::F32 => data_type::FLOAT,
            DType::F64 => data_type::DOUBLE,
            DType::I64 => data_type::INT64,
            DType::Bool => data_type::BOOL,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::Bool => 1,
        }
    }
}

/// One dimension: `coef` times the product of the symbolic sizes in `syms` (sorted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dim {
    pub coef: i64,
    pub syms: Vec<String>,
}

impl Dim {
    pub fn fixed(n: i64) -> Dim {
        Dim {
            coef: n,
            syms: Vec::new(),
        }
    }

    pub fn sym(name: &str) -> Dim {
        Dim {
            coef: 1,
            syms: vec![name.to_string()],
        }
    }

    pub fn as_fixed(&self) -> Option<i64> {
        self.syms.is_empty().then_some(self.coef)
    }

    pub fn is_one(&self) -> bool {
        self.as_fixed() == Some(1)
    }

    pub fn mul(&self, other: &Dim) -> Dim {
        let mut syms: Vec<String> = self.syms.iter().chain(&other.syms).cloned().collect();
        syms.sort();
        Dim {
            coef: self.coef * other.coef,
            syms,
        }
    }

    /// `self / other` when it is again a monomial.
    pub fn div(&self, other: &Dim) -> Option<Dim> {
        if other.coef == 0 || self.coef % other.coef != 0 {
            return None;
        }
        let mut syms = self.syms.clone();
        for s in &other.syms {
            let at = syms.iter().position(|x| x == s)?;
            syms.remove(at);
        }
        Some(Dim {
            coef: self.coef / other.coef,
            syms,
        })
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.syms.is_empty() {
            return write!(f, "{}", self.coef);
        }
        if self.coef != 1 {
            write!(f, "{}*", self.coef)?;
        }
        write!(f, "{}", self.syms.join("*"))
    }
}

pub type Shape = Vec<Dim>;

/// Shape from fixed sizes.
pub fn fixed(dims: &[i64]) -> Shape {
    dims.iter().map(|&d| Dim::fixed(d)).collect()
}

fn numel(shape: &[Dim]) -> Dim {
    shape.iter().fold(Dim::fixed(1), |acc, d| acc.mul(d))
}

fn show(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// A value of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct V(pub(crate) u32);

impl V {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Constant tensor contents.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl Data {
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Little-endian bytes, ONNX's `raw_data` layout.
    pub fn raw_le(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        }
    }

    /// A one-element tensor of `dtype` holding `x`.
    pub fn scalar(dtype: DType, x: f64) -> Data {
        match dtype {
            DType::F32 => Data::F32(vec![x as f32]),
            DType::F64 => Data::F64(vec![x]),
            DType::I64 => Data::I64(vec![x as i64]),
            DType::Bool => Data::Bool(vec![x != 0.0]),
        }
    }
}

/// A tensor with fixed dims, used for constants and initializers.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<i64>,
    pub data: Data,
}

impl Tensor {
    pub fn to_proto(&self, name: &str) -> TensorProto {
        TensorProto {
            dims: self.dims.clone(),
            data_type: self.data.dtype().onnx(),
            name: name.to_string(),
            raw_data: self.data.raw_le(),
            ..Default::default()
        }
    }
}

/// The operators of the builder. Attributes that ONNX takes as constant inputs (axes,
/// shapes, slice bounds) are both kept here, for the gradient rules, and passed as constant
/// input values.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Cos,
    Sin,
    Abs,
    Sign,
    Max,
    Min,
    /// Elementwise power with a constant exponent (input 1 is that constant).
    PowConst(f64),
    MatMul,
    Reshape,
    Transpose(Vec<i64>),
    Concat(i64),
    /// `[0, 1, …, limit − 1]` for a rank-0 int64 `limit` (input 0), with the constants 0 and
    /// 1 as inputs 1 and 2 (emitted as `Range(start, limit, delta)`).
    Range,
    /// Static slice along one axis.
    Slice {
        axis: i64,
        start: i64,
        end: i64,
    },
    /// Rows of a table (axis 0) by integer indices: the embedding lookup.
    Gather,
    GatherElements(i64),
    /// `GatherElements(LogSoftmax(x, axis), idx, axis)`: outputs the picked log-probabilities
    /// and, second, the whole LogSoftmax (which the backward pass reuses).
    LogSoftmaxPick(i64),
    Softmax(i64),
    LogSoftmax(i64),
    ReduceSum {
        axes: Vec<i64>,
        keepdims: bool,
    },
    ReduceMean {
        axes: Vec<i64>,
        keepdims: bool,
    },
    /// LayerNormalization over the last axis; in float32 it also outputs Mean and InvStdDev.
    LayerNorm {
        eps: f64,
    },
    /// tanh-approximated GELU, written as primitive nodes.
    Gelu,
    Where,
    Equal,
    Less,
    Greater,
    Not,
    Cast(DType),
    Unsqueeze(Vec<i64>),
    Squeeze(Vec<i64>),
    Expand,
    Shape,
    ConstantOfShape(Tensor),
    ScatterNdAdd,
    ScatterElementsAdd(i64),
    /// Zero padding by static amounts (begin and end per axis).
    Pad(Vec<i64>),
    Identity,
    /// Index of the largest entry along an axis (dropped), int64; the first on ties.
    ArgMax(i64),
}

impl Op {
    /// Operators with no gradient (their outputs are integers, booleans or shapes, or they
    /// are piecewise constant).
    pub fn is_differentiable(&self) -> bool {
        !matches!(
            self,
            Op::Sign
                | Op::Equal
                | Op::Less
                | Op::Greater
                | Op::Not
                | Op::Shape
                | Op::Range
                | Op::ConstantOfShape(_)
                | Op::ArgMax(_)
        )
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<V>,
    pub outputs: Vec<V>,
}

#[derive(Clone, Debug)]
pub struct ValueDef {
    pub name: Option<String>,
    pub dtype: DType,
    pub shape: Shape,
}

/// A graph under construction.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The floating-point type of the model's activations and parameters.
    pub float: DType,
    values: Vec<ValueDef>,
    nodes: Vec<Node>,
    inputs: Vec<V>,
    outputs: Vec<V>,
    initializers: Vec<(V, Tensor)>,
    const_cache: HashMap<(DType, Vec<i64>, Vec<u8>), V>,
    names: HashMap<String, V>,
}

impl Graph {
    pub fn new(float: DType) -> Graph {
        assert!(float.is_float(), "graph float type must be f32 or f64");
        Graph {
            float,
            values: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            initializers: Vec::new(),
            const_cache: HashMap::new(),
            names: HashMap::new(),
        }
    }

    // ---- values -------------------------------------------------------------------------

    fn new_value(&mut self, dtype: DType, shape: Shape) -> V {
        self.values.push(ValueDef {
            name: None,
            dtype,
            shape,
        });
        V((self.values.len() - 1) as u32)
    }

    pub fn dtype(&self, v: V) -> DType {
        self.values[v.index()].dtype
    }

    pub fn shape(&self, v: V) -> &Shape {
        &self.values[v.index()].shape
    }

    pub fn rank(&self, v: V) -> usize {
        self.shape(v).len()
    }

    /// Static size of axis `axis` (negative counts from the end); panics if symbolic.
    pub fn dim(&self, v: V, axis: i64) -> i64 {
        let ax = norm_axis(axis, self.rank(v));
        self.shape(v)[ax]
            .as_fixed()
            .unwrap_or_else(|| panic!("axis {axis} of {} must be static", show(self.shape(v))))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn value_count(&self) -> usize {
        self.values.len()
    }

    pub fn inputs(&self) -> &[V] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[V] {
        &self.outputs
    }

    pub fn name_of(&self, v: V) -> String {
        self.values[v.index()]
            .name
            .clone()
            .unwrap_or_else(|| format!("t{}", v.0))
    }

    pub fn by_name(&self, name: &str) -> Option<V> {
        self.names.get(name).copied()
    }

    fn set_name(&mut self, v: V, name: &str) {
        assert!(
            !self.names.contains_key(name),
            "graph value name {name:?} used twice"
        );
        assert!(
            self.values[v.index()].name.is_none(),
            "value {} already named",
            self.name_of(v)
        );
        self.values[v.index()].name = Some(name.to_string());
        self.names.insert(name.to_string(), v);
    }

    /// A graph input.
    pub fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> V {
        let v = self.new_value(dtype, shape);
        self.set_name(v, name);
        self.inputs.push(v);
        v
    }

    /// Marks `v` as a graph output called `name` (through an Identity when `v` already has
    /// a name, e.g. when it is an input).
    pub fn output(&mut self, v: V, name: &str) -> V {
        let out = if self.values[v.index()].name.is_some() || self.initializer_of(v).is_some() {
            self.unary(Op::Identity, v)
        } else {
            v
        };
        self.set_name(out, name);
        self.outputs.push(out);
        out
    }

    fn initializer_of(&self, v: V) -> Option<&Tensor> {
        self.initializers
            .iter()
            .find(|(w, _)| *w == v)
            .map(|(_, t)| t)
    }

    /// A named initializer (e.g. a parameter baked into an inference graph).
    pub fn initializer(&mut self, name: &str, tensor: Tensor) -> V {
        let v = self.new_value(tensor.data.dtype(), fixed(&tensor.dims));
        self.set_name(v, name);
        self.initializers.push((v, tensor));
        v
    }

    /// An unnamed constant; identical small constants are shared.
    pub fn constant(&mut self, tensor: Tensor) -> V {
        let key = (
            tensor.data.dtype(),
            tensor.dims.clone(),
            tensor.data.raw_le(),
        );
        if let Some(&v) = self.const_cache.get(&key) {
            return v;
        }
        let v = self.new_value(tensor.data.dtype(), fixed(&tensor.dims));
        self.initializers.push((v, tensor));
        self.const_cache.insert(key, v);
        v
    }

    /// A rank-0 constant of the graph's float type.
    pub fn scalar(&mut self, x: f64) -> V {
        let data = Data::scalar(self.float, x);
        self.constant(Tensor { dims: vec![], data })
    }

    /// A rank-0 constant of `dtype`.
    pub fn scalar_of(&mut self, dtype: DType, x: f64) -> V {
        self.constant(Tensor {
            dims: vec![],
            data: Data::scalar(dtype, x),
        })
    }

    /// A 1-D int64 constant.
    pub fn i64s(&mut self, xs: &[i64]) -> V {
        self.constant(Tensor {
            dims: vec![xs.len() as i64],
            data: Data::I64(xs.to_vec()),
        })
    }

    fn push(&mut self, op: Op, inputs: Vec<V>, outs: Vec<(DType, Shape)>) -> Vec<V> {
        let outputs: Vec<V> = outs
            .into_iter()
            .map(|(dt, sh)| self.new_value(dt, sh))
            .collect();
        self.nodes.push(Node {
            op,
            inputs,
            outputs: outputs.clone(),
        });
        outputs
    }

    fn push1(&mut self, op: Op, inputs: Vec<V>, dtype: DType, shape: Shape) -> V {
        self.push(op, inputs, vec![(dtype, shape)])[0]
    }

    fn unary(&mut self, op: Op, x: V) -> V {
        let (dt, sh) = (self.dtype(x), self.shape(x).clone());
        self.push1(op, vec![x], dt, sh)
    }

    // ---- elementwise --------------------------------------------------------------------

    fn broadcast(&self, a: V, b: V) -> Shape {
        broadcast_shapes(self.shape(a), self.shape(b)).unwrap_or_else(|| {
            panic!(
                "shapes {} and {} do not broadcast",
                show(self.shape(a)),
                show(self.shape(b))
            )
        })
    }

    fn binary(&mut self, op: Op, a: V, b: V) -> V {
        assert_eq!(
            self.dtype(a),
            self.dtype(b),
            "{op:?}: operand dtypes differ"
        );
        let sh = self.broadcast(a, b);
        let dt = self.dtype(a);
        self.push1(op, vec![a, b], dt, sh)
    }

    pub fn add(&mut self, a: V, b: V) -> V {
        self.binary(Op::Add, a, b)
    }
    pub fn sub(&mut self, a: V, b: V) -> V {
        self.binary(Op::Sub, a, b)
    }
    pub fn mul(&mut self, a: V, b: V) -> V {
        self.binary(Op::Mul, a, b)
    }
    pub fn div(&mut self, a: V, b: V) -> V {
        self.binary(Op::Div, a, b)
    }
    pub fn max(&mut self, a: V, b: V) -> V {
        self.binary(Op::Max, a, b)
    }
    pub fn min(&mut self, a: V, b: V) -> V {
        self.binary(Op::Min, a, b)
    }
    pub fn neg(&mut self, x: V) -> V {
        self.unary(Op::Neg, x)
    }
    pub fn exp(&mut self, x: V) -> V {
        self.unary(Op::Exp, x)
    }
    pub fn log(&mut self, x: V) -> V {
        self.unary(Op::Log, x)
    }
    pub fn sqrt(&mut self, x: V) -> V {
        self.unary(Op::Sqrt, x)
    }
    pub fn tanh(&mut self, x: V) -> V {
        self.unary(Op::Tanh, x)
    }
    pub fn sigmoid(&mut self, x: V) -> V {
        self.unary(Op::Sigmoid, x)
    }
    pub fn cos(&mut self, x: V) -> V {
        self.unary(Op::Cos, x)
    }
    pub fn sin(&mut self, x: V) -> V {
        self.unary(Op::Sin, x)
    }
    pub fn abs(&mut self, x: V) -> V {
        self.unary(Op::Abs, x)
    }
    pub fn sign(&mut self, x: V) -> V {
        self.unary(Op::Sign, x)
    }
    pub fn gelu(&mut self, x: V) -> V {
        self.unary(Op::Gelu, x)
    }
    pub fn identity(&mut self, x: V) -> V {
        self.unary(Op::Identity, x)
    }

    /// `x` raised to a constant power.
    pub fn pow_const(&mut self, x: V, p: f64) -> V {
        let e = self.scalar_of(self.dtype(x), p);
        let (dt, sh) = (self.dtype(x), self.shape(x).clone());
        self.push1(Op::PowConst(p), vec![x, e], dt, sh)
    }

    /// `a + s` for a float scalar `s`.
    pub fn add_scalar(&mut self, a: V, s: f64) -> V {
        let c = self.scalar_of(self.dtype(a), s);
        self.add(a, c)
    }

    /// `a * s` for a float scalar `s`.
    pub fn mul_scalar(&mut self, a: V, s: f64) -> V {
        let c = self.scalar_of(self.dtype(a), s);
        self.mul(a, c)
    }

    fn compare(&mut self, op: Op, a: V, b: V) -> V {
        assert_eq!(
            self.dtype(a),
            self.dtype(b),
            "{op:?}: operand dtypes differ"
        );
        let sh = self.broadcast(a, b);
        self.push1(op, vec![a, b], DType::Bool, sh)
    }

    pub fn equal(&mut self, a: V, b: V) -> V {
        self.compare(Op::Equal, a, b)
    }
    pub fn less(&mut self, a: V, b: V) -> V {
        self.compare(Op::Less, a, b)
    }
    pub fn greater(&mut self, a: V, b: V) -> V {
        self.compare(Op::Greater, a, b)
    }
    pub fn not(&mut self, x: V) -> V {
        assert_eq!(self.dtype(x), DType::Bool);
        self.unary(Op::Not, x)
    }

    /// `cond ? a : b`, broadcasting all three.
    pub fn where_(&mut self, cond: V, a: V, b: V) -> V {
        assert_eq!(
            self.dtype(cond),
            DType::Bool,
            "Where: condition must be bool"
        );
        assert_eq!(self.dtype(a), self.dtype(b), "Where: branch dtypes differ");
        let ab = self.broadcast(a, b);
        let sh = broadcast_shapes(self.shape(cond), &ab)
            .unwrap_or_else(|| panic!("Where: condition does not broadcast"));
        let dt = self.dtype(a);
        self.push1(Op::Where, vec![cond, a, b], dt, sh)
    }

    pub fn cast(&mut self, x: V, to: DType) -> V {
        let sh = self.shape(x).clone();
        self.push1(Op::Cast(to), vec![x], to, sh)
    }

    // ---- linear algebra -----------------------------------------------------------------

    /// numpy-style matmul of rank >= 2 operands, batch axes broadcast.
    pub fn matmul(&mut self, a: V, b: V) -> V {
        assert_eq!(self.dtype(a), self.dtype(b), "MatMul: dtypes differ");
        let (sa, sb) = (self.shape(a).clone(), self.shape(b).clone());
        assert!(
            sa.len() >= 2 && sb.len() >= 2,
            "MatMul: operands must have rank >= 2"
        );
        let (m, ka) = (&sa[sa.len() - 2], &sa[sa.len() - 1]);
        let (kb, n) = (&sb[sb.len() - 2], &sb[sb.len() - 1]);
        assert_eq!(
            ka,
            kb,
            "MatMul: inner sizes differ: {} vs {}",
            show(&sa),
            show(&sb)
        );
        let batch =
            broadcast_shapes(&sa[..sa.len() - 2], &sb[..sb.len() - 2]).unwrap_or_else(|| {
                panic!(
                    "MatMul: batch axes of {} and {} differ",
                    show(&sa),
                    show(&sb)
                )
            });
        let mut out = batch;
        out.push(m.clone());
        out.push(n.clone());
        let dt = self.dtype(a);
        self.push1(Op::MatMul, vec![a, b], dt, out)
    }

    // ---- shapes -------------------------------------------------------------------------

    /// Reshape with ONNX semantics for `0` (copy) and `-1` (infer).
    pub fn reshape(&mut self, x: V, spec: &[i64]) -> V {
        let sx = self.shape(x).clone();
        let mut out: Vec<Option<Dim>> = spec
            .iter()
            .enumerate()
            .map(|(i, &s)| match s {
                0 => Some(sx[i].clone()),
                -1 => None,
                n if n > 0 => Some(Dim::fixed(n)),
                _ => panic!("Reshape: bad size {s}"),
            })
            .collect();
        let holes = out.iter().filter(|d| d.is_none()).count();
        assert!(holes <= 1, "Reshape: more than one -1");
        let known = out
            .iter()
            .flatten()
            .fold(Dim::fixed(1), |acc, d| acc.mul(d));
        let total = numel(&sx);
        if holes == 1 {
            let rest = total
                .div(&known)
                .unwrap_or_else(|| panic!("Reshape: {} into {spec:?} does not divide", show(&sx)));
            for d in out.iter_mut() {
                if d.is_none() {
                    *d = Some(rest.clone());
                }
            }
        }
        let out: Shape = out.into_iter().map(|d| d.expect("filled")).collect();
        assert_eq!(
            numel(&out),
            total,
            "Reshape: {} into {spec:?} changes the size",
            show(&sx)
        );
        let s = self.i64s(spec);
        let dt = self.dtype(x);
        self.push1(Op::Reshape, vec![x, s], dt, out)
    }

    /// Reshape to the runtime shape of `like` (whose static shape `x` must match in size).
    pub fn reshape_like(&mut self, x: V, like: V) -> V {
        let target = self.shape(like).clone();
        assert_eq!(
            numel(self.shape(x)),
            numel(&target),
            "reshape_like: sizes differ"
        );
        let s = self.shape_of(like);
        let dt = self.dtype(x);
        self.push1(Op::Reshape, vec![x, s], dt, target)
    }

    pub fn transpose(&mut self, x: V, perm: &[i64]) -> V {
        let sx = self.shape(x).clone();
        assert_eq!(perm.len(), sx.len(), "Transpose: perm rank");
        let out: Shape = perm.iter().map(|&p| sx[p as usize].clone()).collect();
        let dt = self.dtype(x);
        self.push1(Op::Transpose(perm.to_vec()), vec![x], dt, out)
    }

    /// Swap the last two axes.
    pub fn transpose_last2(&mut self, x: V) -> V {
        let r = self.rank(x) as i64;
        let mut perm: Vec<i64> = (0..r).collect();
        perm.swap((r - 1) as usize, (r - 2) as usize);
        self.transpose(x, &perm)
    }

    pub fn concat(&mut self, xs: &[V], axis: i64) -> V {
        assert!(!xs.is_empty(), "Concat of nothing");
        let rank = self.rank(xs[0]);
        let ax = norm_axis(axis, rank);
        let mut out = self.shape(xs[0]).clone();
        for &x in &xs[1..] {
            let s = self.shape(x);
            assert_eq!(s.len(), rank, "Concat: ranks differ");
            for (i, d) in s.iter().enumerate() {
                if i != ax {
                    assert_eq!(d, &out[i], "Concat: axis {i} differs");
                }
            }
            let sum = out[ax].as_fixed().zip(d_fixed(s, ax)).map(|(a, b)| a + b);
            out[ax] = Dim::fixed(sum.unwrap_or_else(|| panic!("Concat: axis must be static")));
        }
        let dt = self.dtype(xs[0]);
        self.push1(Op::Concat(ax as i64), xs.to_vec(), dt, out)
    }

    /// `x[.., start..end, ..]` along `axis` (static bounds, step 1).
    pub fn slice(&mut self, x: V, axis: i64, start: i64, end: i64) -> V {
        let rank = self.rank(x);
        let ax = norm_axis(axis, rank);
        // Along a symbolic axis the bounds are the caller's promise (ONNX clamps them); the
        // backward pass needs the axis static.
        let n = self.shape(x)[ax].as_fixed().unwrap_or(i64::MAX);
        assert!(
            0 <= start && start < end && end <= n,
            "Slice {start}..{end} of {n}"
        );
        let mut out = self.shape(x).clone();
        out[ax] = Dim::fixed(end - start);
        let (s, e, a) = (
            self.i64s(&[start]),
            self.i64s(&[end]),
            self.i64s(&[ax as i64]),
        );
        let dt = self.dtype(x);
        self.push1(
            Op::Slice {
                axis: ax as i64,
                start,
                end,
            },
            vec![x, s, e, a],
            dt,
            out,
        )
    }

    /// `0..n` where `n` is the runtime size of axis `axis` of `x`: an int64 vector whose one
    /// dimension is that axis' (possibly symbolic) size.
    pub fn arange_of_axis(&mut self, x: V, axis: i64) -> V {
        let ax = norm_axis(axis, self.rank(x));
        let dim = self.shape(x)[ax].clone();
        let shape = self.shape_of(x);
        let n = self.slice(shape, 0, ax as i64, ax as i64 + 1);
        let n = self.squeeze(n, &[0]);
        let zero = self.scalar_of(DType::I64, 0.0);
        let one = self.scalar_of(DType::I64, 1.0);
        self.push1(Op::Range, vec![n, zero, one], DType::I64, vec![dim])
    }

    pub fn unsqueeze(&mut self, x: V, axes: &[i64]) -> V {
        let mut out = self.shape(x).clone();
        let rank = out.len() + axes.len();
        let mut norm: Vec<i64> = axes.iter().map(|&a| norm_axis(a, rank) as i64).collect();
        norm.sort();
        for &a in &norm {
            out.insert(a as usize, Dim::fixed(1));
        }
        let c = self.i64s(&norm);
        let dt = self.dtype(x);
        self.push1(Op::Unsqueeze(norm), vec![x, c], dt, out)
    }

    pub fn squeeze(&mut self, x: V, axes: &[i64]) -> V {
        let rank = self.rank(x);
        let mut norm: Vec<i64> = axes.iter().map(|&a| norm_axis(a, rank) as i64).collect();
        norm.sort();
        let mut out = self.shape(x).clone();
        for &a in norm.iter().rev() {
            assert!(out[a as usize].is_one(), "Squeeze: axis {a} is not 1");
            out.remove(a as usize);
        }
        let c = self.i64s(&norm);
        let dt = self.dtype(x);
        self.push1(Op::Squeeze(norm), vec![x, c], dt, out)
    }

    /// The runtime shape of `x` as an int64 vector.
    pub fn shape_of(&mut self, x: V) -> V {
        let r = self.rank(x) as i64;
        self.push1(Op::Shape, vec![x], DType::I64, fixed(&[r]))
    }

    /// Broadcast `x` to the runtime shape of `like` (static shape of `like`).
    pub fn expand_like(&mut self, x: V, like: V) -> V {
        let target = self.shape(like).clone();
        let sh = broadcast_shapes(self.shape(x), &target)
            .unwrap_or_else(|| panic!("Expand: {} to {}", show(self.shape(x)), show(&target)));
        assert_eq!(
            sh,
            target,
            "Expand: {} to {}",
            show(self.shape(x)),
            show(&target)
        );
        let s = self.shape_of(like);
        let dt = self.dtype(x);
        self.push1(Op::Expand, vec![x, s], dt, target)
    }

    /// A tensor of the runtime shape of `like`, filled with `value` of `dtype`.
    pub fn full_like(&mut self, like: V, dtype: DType, value: f64) -> V {
        let target = self.shape(like).clone();
        let s = self.shape_of(like);
        let t = Tensor {
            dims: vec![1],
            data: Data::scalar(dtype, value),
        };
        self.push1(Op::ConstantOfShape(t), vec![s], dtype, target)
    }

    pub fn zeros_like(&mut self, like: V) -> V {
        let dt = self.dtype(like);
        self.full_like(like, dt, 0.0)
    }

    /// Zero padding: `pads` = begin amounts for every axis, then end amounts.
    pub fn pad(&mut self, x: V, pads: &[i64]) -> V {
        let rank = self.rank(x);
        assert_eq!(pads.len(), 2 * rank, "Pad: need 2*rank amounts");
        let mut out = self.shape(x).clone();
        for i in 0..rank {
            if pads[i] != 0 || pads[rank + i] != 0 {
                let n = self.dim(x, i as i64);
                out[i] = Dim::fixed(n + pads[i] + pads[rank + i]);
            }
        }
        let p = self.i64s(pads);
        let dt = self.dtype(x);
        self.push1(Op::Pad(pads.to_vec()), vec![x, p], dt, out)
    }

    // ---- indexing -----------------------------------------------------------------------

    /// Rows of `table` (rank 2) at int64 `idx`: output `idx.shape + [table.cols]`.
    pub fn gather(&mut self, table: V, idx: V) -> V {
        assert_eq!(self.rank(table), 2, "Gather: table must be rank 2");
        assert_eq!(self.dtype(idx), DType::I64, "Gather: indices must be int64");
        let mut out = self.shape(idx).clone();
        out.push(self.shape(table)[1].clone());
        let dt = self.dtype(table);
        self.push1(Op::Gather, vec![table, idx], dt, out)
    }

    /// The index of the largest entry along `axis` (removed from the shape), int64.
    pub fn argmax(&mut self, x: V, axis: i64) -> V {
        let ax = norm_axis(axis, self.rank(x));
        let mut out = self.shape(x).clone();
        out.remove(ax);
        self.push1(Op::ArgMax(ax as i64), vec![x], DType::I64, out)
    }

    pub fn gather_elements(&mut self, x: V, idx: V, axis: i64) -> V {
        assert_eq!(self.rank(x), self.rank(idx), "GatherElements: ranks differ");
        let ax = norm_axis(axis, self.rank(x)) as i64;
        let out = self.shape(idx).clone();
        let dt = self.dtype(x);
        self.push1(Op::GatherElements(ax), vec![x, idx], dt, out)
    }

    /// `log_softmax(x, axis)` picked at `idx` along `axis` (shape of `idx`), for
    /// cross-entropy: its backward pass is one scatter-add onto `−p·g` instead of a dense
    /// one-hot gradient.
    pub fn log_softmax_pick(&mut self, x: V, idx: V, axis: i64) -> V {
        assert_eq!(self.rank(x), self.rank(idx), "LogSoftmaxPick: ranks differ");
        let ax = norm_axis(axis, self.rank(x)) as i64;
        let dt = self.dtype(x);
        let (picked, full) = (self.shape(idx).clone(), self.shape(x).clone());
        self.push(
            Op::LogSoftmaxPick(ax),
            vec![x, idx],
            vec![(dt, picked), (dt, full)],
        )[0]
    }

    /// `data` with `updates` added at `idx` (ScatterND, reduction add).
    pub fn scatter_nd_add(&mut self, data: V, idx: V, updates: V) -> V {
        let (dt, sh) = (self.dtype(data), self.shape(data).clone());
        self.push1(Op::ScatterNdAdd, vec![data, idx, updates], dt, sh)
    }

    /// `data` with `updates` added at `idx` along `axis` (ScatterElements, reduction add).
    pub fn scatter_elements_add(&mut self, data: V, idx: V, updates: V, axis: i64) -> V {
        let ax = norm_axis(axis, self.rank(data)) as i64;
        let (dt, sh) = (self.dtype(data), self.shape(data).clone());
        self.push1(Op::ScatterElementsAdd(ax), vec![data, idx, updates], dt, sh)
    }

    // ---- normalisation and reductions ---------------------------------------------------

    pub fn softmax(&mut self, x: V, axis: i64) -> V {
        let ax = norm_axis(axis, self.rank(x)) as i64;
        self.unary(Op::Softmax(ax), x)
    }

    pub fn log_softmax(&mut self, x: V, axis: i64) -> V {
        let ax = norm_axis(axis, self.rank(x)) as i64;
        self.unary(Op::LogSoftmax(ax), x)
    }

    fn reduce_shape(&self, x: V, axes: &[i64], keepdims: bool) -> (Vec<i64>, Shape) {
        let rank = self.rank(x);
        let mut norm: Vec<i64> = axes.iter().map(|&a| norm_axis(a, rank) as i64).collect();
        norm.sort();
        norm.dedup();
        let mut out = Vec::new();
        for (i, d) in self.shape(x).iter().enumerate() {
            if norm.contains(&(i as i64)) {
                if keepdims {
                    out.push(Dim::fixed(1));
                }
            } else {
                out.push(d.clone());
            }
        }
        (norm, out)
    }

    pub fn reduce_sum(&mut self, x: V, axes: &[i64], keepdims: bool) -> V {
        let (axes, out) = self.reduce_shape(x, axes, keepdims);
        let a = self.i64s(&axes);
        let dt = self.dtype(x);
        self.push1(Op::ReduceSum { axes, keepdims }, vec![x, a], dt, out)
    }

    pub fn reduce_mean(&mut self, x: V, axes: &[i64], keepdims: bool) -> V {
        let (axes, out) = self.reduce_shape(x, axes, keepdims);
        let a = self.i64s(&axes);
        let dt = self.dtype(x);
        self.push1(Op::ReduceMean { axes, keepdims }, vec![x, a], dt, out)
    }

    /// Sum of every element, as a rank-0 value.
    pub fn sum_all(&mut self, x: V) -> V {
        let axes: Vec<i64> = (0..self.rank(x) as i64).collect();
        if axes.is_empty() {
            return x;
        }
        self.reduce_sum(x, &axes, false)
    }

    /// LayerNormalization over the last axis with scale `gamma` and bias `beta` (both of
    /// the last axis' size).
    pub fn layer_norm(&mut self, x: V, gamma: V, beta: V, eps: f64) -> V {
        let h = self
            .shape(x)
            .last()
            .cloned()
            .expect("LayerNorm of a scalar");
        assert_eq!(
            self.shape(gamma),
            &vec![h.clone()],
            "LayerNorm: gamma shape"
        );
        assert_eq!(self.shape(beta), &vec![h], "LayerNorm: beta shape");
        let dt = self.dtype(x);
        let sh = self.shape(x).clone();
        let mut outs = vec![(dt, sh.clone())];
        if dt == DType::F32 {
            // Mean and InvStdDev feed the backward pass (ORT computes them in float32 only,
            // which is why float64 graphs recompute them instead).
            let mut stat = sh;
            *stat.last_mut().expect("rank >= 1") = Dim::fixed(1);
            outs.push((dt, stat.clone()));
            outs.push((dt, stat));
        }
        self.push(Op::LayerNorm { eps }, vec![x, gamma, beta], outs)[0]
    }

    // ---- emission -----------------------------------------------------------------------

    /// Values needed to compute the outputs, and the nodes that produce them, in order.
    fn live(&self) -> (Vec<bool>, Vec<bool>) {
        let mut value_live = vec![false; self.values.len()];
        let mut node_live = vec![false; self.nodes.len()];
        for &o in &self.outputs {
            value_live[o.index()] = true;
        }
        for (i, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|o| value_live[o.index()]) {
                node_live[i] = true;
                for &x in &node.inputs {
                    value_live[x.index()] = true;
                }
            }
        }
        (value_live, node_live)
    }

    fn value_info(&self, v: V) -> ValueInfoProto {
        let def = &self.values[v.index()];
        let dims = def
            .shape
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                value: Some(match d.as_fixed() {
                    Some(n) => tensor_shape_proto::dimension::Value::DimValue(n),
                    None => tensor_shape_proto::dimension::Value::DimParam(d.to_string()),
                }),
            })
            .collect();
        ValueInfoProto {
            name: self.name_of(v),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: def.dtype.onnx(),
                    shape: Some(TensorShapeProto { dim: dims }),
                })),
            }),
            doc_string: String::new(),
        }
    }

    /// The ONNX model: only nodes and constants the outputs need, plus `metadata`.
    pub fn to_model(&self, graph_name: &str, metadata: &[(String, String)]) -> ModelProto {
        let (value_live, node_live) = self.live();
        let mut nodes = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node_live[i] {
                self.emit(node, i, &mut nodes);
            }
        }
        let initializer = self
            .initializers
            .iter()
            .filter(|(v, _)| value_live[v.index()])
            .map(|(v, t)| t.to_proto(&self.name_of(*v)))
            .collect();
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "netfm-models".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                node: nodes,
                name: graph_name.into(),
                initializer,
                input: self.inputs.iter().map(|&v| self.value_info(v)).collect(),
                output: self.outputs.iter().map(|&v| self.value_info(v)).collect(),
                ..Default::default()
            }),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn emit(&self, node: &Node, index: usize, out: &mut Vec<NodeProto>) {
        let ins: Vec<String> = node.inputs.iter().map(|&v| self.name_of(v)).collect();
        let outs: Vec<String> = node.outputs.iter().map(|&v| self.name_of(v)).collect();
        let name = format!("n{index}");
        let simple = |op: &str, attrs: Vec<AttributeProto>| NodeProto {
            input: ins.clone(),
            output: outs.clone(),
            name: name.clone(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        };
        let n = match &node.op {
            Op::Add => simple("Add", vec![]),
            Op::Sub => simple("Sub", vec![]),
            Op::Mul => simple("Mul", vec![]),
            Op::Div => simple("Div", vec![]),
            Op::Neg => simple("Neg", vec![]),
            Op::Exp => simple("Exp", vec![]),
            Op::Log => simple("Log", vec![]),
            Op::Sqrt => simple("Sqrt", vec![]),
            Op::Tanh => simple("Tanh", vec![]),
            Op::Sigmoid => simple("Sigmoid", vec![]),
            Op::Cos => simple("Cos", vec![]),
            Op::Sin => simple("Sin", vec![]),
            Op::Abs => simple("Abs", vec![]),
            Op::Sign => simple("Sign", vec![]),
            Op::Max => simple("Max", vec![]),
            Op::Min => simple("Min", vec![]),
            Op::PowConst(_) => simple("Pow", vec![]),
            Op::MatMul => simple("MatMul", vec![]),
            Op::Reshape => simple("Reshape", vec![]),
            Op::Transpose(perm) => simple("Transpose", vec![attr_ints("perm", perm)]),
            Op::Concat(axis) => simple("Concat", vec![attr_int("axis", *axis)]),
            Op::Slice { .. } => simple("Slice", vec![]),
            Op::Range => NodeProto {
                input: vec![ins[1].clone(), ins[0].clone(), ins[2].clone()],
                output: outs.clone(),
                name: name.clone(),
                op_type: "Range".into(),
                ..Default::default()
            },
            Op::Gather => simple("Gather", vec![attr_int("axis", 0)]),
            Op::GatherElements(axis) => simple("GatherElements", vec![attr_int("axis", *axis)]),
            Op::LogSoftmaxPick(axis) => {
                out.push(NodeProto {
                    input: vec![ins[0].clone()],
                    output: vec![outs[1].clone()],
                    name: format!("{name}_lsm"),
                    op_type: "LogSoftmax".into(),
                    attribute: vec![attr_int("axis", *axis)],
                    ..Default::default()
                });
                NodeProto {
                    input: vec![outs[1].clone(), ins[1].clone()],
                    output: vec![outs[0].clone()],
                    name,
                    op_type: "GatherElements".into(),
                    attribute: vec![attr_int("axis", *axis)],
                    ..Default::default()
                }
            }
            Op::Softmax(axis) => simple("Softmax", vec![attr_int("axis", *axis)]),
            Op::LogSoftmax(axis) => simple("LogSoftmax", vec![attr_int("axis", *axis)]),
            Op::ReduceSum { keepdims, .. } => {
                simple("ReduceSum", vec![attr_int("keepdims", *keepdims as i64)])
            }
            Op::ReduceMean { keepdims, .. } => {
                simple("ReduceMean", vec![attr_int("keepdims", *keepdims as i64)])
            }
            Op::LayerNorm { eps } => simple(
                "LayerNormalization",
                vec![
                    attr_int("axis", -1),
                    attr_float("epsilon", *eps as f32),
                    attr_int("stash_type", 1),
                ],
            ),
            Op::Gelu => {
                self.emit_gelu(&ins[0], &outs[0], &name, node.outputs[0], out);
                return;
            }
            Op::Where => simple("Where", vec![]),
            Op::Equal => simple("Equal", vec![]),
            Op::Less => simple("Less", vec![]),
            Op::Greater => simple("Greater", vec![]),
            Op::Not => simple("Not", vec![]),
            Op::Cast(to) => simple("Cast", vec![attr_int("to", to.onnx() as i64)]),
            Op::Unsqueeze(_) => simple("Unsqueeze", vec![]),
            Op::Squeeze(_) => simple("Squeeze", vec![]),
            Op::Expand => simple("Expand", vec![]),
            Op::Shape => simple("Shape", vec![]),
            Op::ConstantOfShape(t) => simple("ConstantOfShape", vec![attr_tensor("value", t)]),
            Op::ScatterNdAdd => simple("ScatterND", vec![attr_str("reduction", "add")]),
            Op::ScatterElementsAdd(axis) => simple(
                "ScatterElements",
                vec![attr_int("axis", *axis), attr_str("reduction", "add")],
            ),
            Op::Pad(_) => simple("Pad", vec![attr_str("mode", "constant")]),
            Op::Identity => simple("Identity", vec![]),
            Op::ArgMax(axis) => simple(
                "ArgMax",
                vec![attr_int("axis", *axis), attr_int("keepdims", 0)],
            ),
        };
        out.push(n);
    }

    /// gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) as primitive nodes.
    fn emit_gelu(&self, x: &str, y: &str, name: &str, yv: V, out: &mut Vec<NodeProto>) {
        let dt = self.dtype(yv);
        let c = |k: &str| format!("{name}_{k}");
        let constant = |cname: String, value: f64| NodeProto {
            output: vec![cname.clone()],
            name: cname,
            op_type: "Constant".into(),
            attribute: vec![attr_tensor(
                "value",
                &Tensor {
                    dims: vec![],
                    data: Data::scalar(dt, value),
                },
            )],
            ..Default::default()
        };
        let op = |op: &str, ins: &[&str], o: String| NodeProto {
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: vec![o.clone()],
            name: o,
            op_type: op.into(),
            ..Default::default()
        };
        out.push(constant(c("k"), GELU_A));
        out.push(constant(c("s"), GELU_C));
        out.push(constant(c("half"), 0.5));
        out.push(constant(c("one"), 1.0));
        out.push(op("Mul", &[x, x], c("x2")));
        out.push(op("Mul", &[&c("x2"), x], c("x3")));
        out.push(op("Mul", &[&c("x3"), &c("k")], c("kx3")));
        out.push(op("Add", &[x, &c("kx3")], c("inner")));
        out.push(op("Mul", &[&c("inner"), &c("s")], c("arg")));
        out.push(op("Tanh", &[&c("arg")], c("t")));
        out.push(op("Add", &[&c("t"), &c("one")], c("onet")));
        out.push(op("Mul", &[x, &c("half")], c("hx")));
        out.push(op("Mul", &[&c("hx"), &c("onet")], y.to_string()));
    }
}

/// GELU's cubic coefficient.
pub const GELU_A: f64 = 0.044715;
/// √(2/π).
pub const GELU_C: f64 = 0.797_884_560_802_865_4;

fn d_fixed(s: &[Dim], ax: usize) -> Option<i64> {
    s[ax].as_fixed()
}

/// Axis index in `0..rank` for a possibly negative axis.
pub fn norm_axis(axis: i64, rank: usize) -> usize {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    assert!(
        (0..r.max(1)).contains(&a),
        "axis {axis} out of range for rank {rank}"
    );
    a as usize
}

/// numpy broadcasting of two static shapes.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Option<Shape> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = (i + a.len()).checked_sub(n).map(|j| &a[j]);
        let db = (i + b.len()).checked_sub(n).map(|j| &b[j]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(x), Some(y)) if x.is_one() => y.clone(),
            (Some(x), Some(y)) if y.is_one() => x.clone(),
            _ => return None,
        };
        out.push(d);
    }
    Some(out)
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_str(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::TENSOR,
        t: Some(t.to_proto("")),
        ..Default::default()
    }
}

//! Host tensors ([`netfm_models::Tensor`]: dims plus a typed vector) to and from ONNX
//! Runtime values, and a plain run of a session on named host tensors.

use anyhow::{bail, Context};
use netfm_models::{Data, Tensor};
use ort::session::Session;
use ort::value::{
    DynValue, Tensor as OrtTensor, TensorElementType, TensorValueTypeMarker, Value, ValueType,
};
use std::collections::HashMap;

/// An ONNX Runtime value holding a copy of `t`.
pub fn to_value(t: &Tensor) -> anyhow::Result<DynValue> {
    let dims = t.dims.clone();
    let v = match &t.data {
        Data::F32(x) => OrtTensor::from_array((dims, x.clone()))?.into_dyn(),
        Data::F64(x) => OrtTensor::from_array((dims, x.clone()))?.into_dyn(),
        Data::I64(x) => OrtTensor::from_array((dims, x.clone()))?.into_dyn(),
        Data::Bool(x) => OrtTensor::from_array((dims, x.clone()))?.into_dyn(),
    };
    Ok(v)
}

/// A host copy of a tensor value (on the CPU).
pub fn from_value<K: TensorValueTypeMarker + ?Sized>(v: &Value<K>) -> anyhow::Result<Tensor> {
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        bail!("expected a tensor, got {:?}", v.dtype());
    };
    fn grab<
        T: ort::value::PrimitiveTensorElementType + Clone,
        K: TensorValueTypeMarker + ?Sized,
    >(
        v: &Value<K>,
    ) -> anyhow::Result<(Vec<i64>, Vec<T>)> {
        let (shape, data) = v.try_extract_tensor::<T>()?;
        Ok((shape.to_vec(), data.to_vec()))
    }
    let (dims, data) = match ty {
        TensorElementType::Float32 => {
            let (d, x) = grab::<f32, K>(v)?;
            (d, Data::F32(x))
        }
        TensorElementType::Float64 => {
            let (d, x) = grab::<f64, K>(v)?;
            (d, Data::F64(x))
        }
        TensorElementType::Int64 => {
            let (d, x) = grab::<i64, K>(v)?;
            (d, Data::I64(x))
        }
        TensorElementType::Bool => {
            let (d, x) = grab::<bool, K>(v)?;
            (d, Data::Bool(x))
        }
        other => bail!("unsupported output element type {other:?}"),
    };
    Ok(Tensor { dims, data })
}

/// Runs `session` on `feeds` and copies every output back, by name.
pub fn run(
    session: &mut Session,
    feeds: &[(&str, &Tensor)],
) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(feeds.len());
    for (name, t) in feeds {
        inputs.push((
            name.to_string(),
            to_value(t).with_context(|| format!("input {name}"))?,
        ));
    }
    let outputs = session.run(inputs).context("running the ONNX model")?;
    let mut out = HashMap::new();
    for (name, value) in &outputs {
        out.insert(
            name.to_string(),
            from_value(&value).with_context(|| format!("output {name}"))?,
        );
    }
    Ok(out)
}

/// The scalar value of a one-element float tensor.
pub fn scalar(t: &Tensor) -> anyhow::Result<f64> {
    match &t.data {
        Data::F32(x) if x.len() == 1 => Ok(x[0] as f64),
        Data::F64(x) if x.len() == 1 => Ok(x[0]),
        _ => bail!("expected a one-element float tensor, got dims {:?}", t.dims),
    }
}

/// Copies `t` into the existing CPU tensor `dst` of the same dtype and element count.
pub fn write_into<K: TensorValueTypeMarker + ?Sized>(
    dst: &mut Value<K>,
    t: &Tensor,
) -> anyhow::Result<()> {
    fn put<T: ort::value::PrimitiveTensorElementType + Copy, K: TensorValueTypeMarker + ?Sized>(
        dst: &mut Value<K>,
        src: &[T],
    ) -> anyhow::Result<()> {
        let (_, data) = dst.try_extract_tensor_mut::<T>()?;
        if data.len() != src.len() {
            bail!("{} values for a tensor of {}", src.len(), data.len());
        }
        data.copy_from_slice(src);
        Ok(())
    }
    match &t.data {
        Data::F32(x) => put(dst, x),
        Data::F64(x) => put(dst, x),
        Data::I64(x) => put(dst, x),
        Data::Bool(x) => put(dst, x),
    }
}

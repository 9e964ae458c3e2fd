//! Prometheus range-query results (`/api/v1/query_range`, `resultType: matrix`): one series
//! per label set, named by its labels (`__name__` first, then the others sorted, e.g.
//! `node_network_receive_bytes_total{device="eth0",instance="r1:9100"}`). Sample values are
//! strings in Prometheus' format (`"NaN"`, `"+Inf"` included); a non-finite value is a
//! missing point.

use super::series::Point;
use anyhow::{bail, Context};
use serde_json::Value;

/// The points of every series of a query_range response.
pub fn parse(text: &str) -> anyhow::Result<Vec<Point>> {
    let root: Value = serde_json::from_str(text).context("not JSON")?;
    if let Some(status) = root.get("status").and_then(Value::as_str) {
        if status != "success" {
            let err = root.get("error").and_then(Value::as_str).unwrap_or("");
            bail!("the query failed: status {status:?} {err}");
        }
    }
    let data = root
        .get("data")
        .context("no \"data\": not a Prometheus query result")?;
    let kind = data.get("resultType").and_then(Value::as_str);
    if kind != Some("matrix") {
        bail!(
            "resultType is {:?}: a range query (/api/v1/query_range) gives \"matrix\"",
            kind.unwrap_or("absent")
        );
    }
    let result = data
        .get("result")
        .and_then(Value::as_array)
        .context("no \"result\" array")?;
    let mut out = Vec::new();
    for (k, s) in result.iter().enumerate() {
        let name = series_name(s.get("metric"))
            .with_context(|| format!("series {}: its \"metric\" labels", k + 1))?;
        let values = s
            .get("values")
            .and_then(Value::as_array)
            .with_context(|| format!("series {} ({name}): no \"values\" array", k + 1))?;
        for (j, pair) in values.iter().enumerate() {
            let (t, v) = sample(pair)
                .with_context(|| format!("series {} ({name}), sample {}", k + 1, j + 1))?;
            out.push(Point {
                t,
                series: name.clone(),
                value: v,
            });
        }
    }
    Ok(out)
}

fn series_name(metric: Option<&Value>) -> anyhow::Result<String> {
    let Some(m) = metric else {
        return Ok(String::new());
    };
    let m = m.as_object().context("not an object")?;
    let mut labels: Vec<(&String, &str)> = Vec::new();
    for (k, v) in m {
        labels.push((k, v.as_str().context("a label value that is not a string")?));
    }
    labels.sort();
    let metric = labels
        .iter()
        .find(|(k, _)| *k == "__name__")
        .map_or("", |(_, v)| *v);
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    Ok(if rest.is_empty() {
        metric.to_string()
    } else {
        format!("{metric}{{{}}}", rest.join(","))
    })
}

fn sample(pair: &Value) -> anyhow::Result<(f64, f64)> {
    let a = pair
        .as_array()
        .filter(|a| a.len() == 2)
        .context("not a [time, \"value\"] pair")?;
    let t = a[0].as_f64().context("the time is not a number")?;
    let v = match &a[1] {
        Value::String(s) => s
            .parse::<f64>()
            .map_err(|_| anyhow::anyhow!("value {s:?} is not a number"))?,
        Value::Number(n) => n.as_f64().context("value out of range")?,
        other => bail!("value {other} is not a number"),
    };
    Ok((t, if v.is_finite() { v } else { f64::NAN }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[
      {"metric":{"__name__":"node_network_receive_bytes_total","instance":"r1:9100","device":"eth0"},
       "values":[[1700000000,"100"],[1700000060.5,"700"],[1700000120,"NaN"]]},
      {"metric":{"device":"eth1"},"values":[[1700000000,"+Inf"]]}]}}"#;

    #[test]
    fn matrix_series_are_named_by_their_labels() {
        let p = parse(MATRIX).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[0].series,
            "node_network_receive_bytes_total{device=\"eth0\",instance=\"r1:9100\"}"
        );
        assert_eq!((p[1].t, p[1].value), (1700000060.5, 700.0));
        assert!(p[2].value.is_nan());
        assert_eq!(p[3].series, "{device=\"eth1\"}");
        assert!(p[3].value.is_nan());
    }

    #[test]
    fn other_results_are_refused_clearly() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(format!("{:#}", parse(vector).unwrap_err()).contains("query_range"));
        let failed = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(format!("{:#}", parse(failed).unwrap_err()).contains("parse error"));
        let bad = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"x"]]}]}}"#;
        assert!(format!("{:#}", parse(bad).unwrap_err()).contains("sample 1"));
    }
}

//! Classification metrics: accuracy, macro-F1, per-class precision, recall and F1, and the
//! confusion matrix (rows: true class, columns: predicted class), as scikit-learn defines
//! them (a class with no predictions has precision 0; macro-F1 averages over the classes
//! present in the true labels or the predictions).

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Flows of this true class.
    pub support: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClassReport {
    pub flows: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[t][p]`: flows of true class `t` predicted as `p`.
    pub confusion: Vec<Vec<u64>>,
}

impl ClassReport {
    /// From true and predicted class indices below `classes.len()`.
    pub fn of(truth: &[usize], pred: &[usize], classes: &[String]) -> ClassReport {
        let c = classes.len();
        let mut confusion = vec![vec![0u64; c]; c];
        for (&t, &p) in truth.iter().zip(pred) {
            confusion[t][p] += 1;
        }
        let n = truth.len() as u64;
        let correct: u64 = (0..c).map(|k| confusion[k][k]).sum();
        let mut per_class = Vec::with_capacity(c);
        let (mut f1_sum, mut present) = (0.0, 0);
        for k in 0..c {
            let tp = confusion[k][k] as f64;
            let support: u64 = confusion[k].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[k]).sum();
            let precision = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            if support > 0 || predicted > 0 {
                f1_sum += f1;
                present += 1;
            }
            per_class.push(ClassMetrics {
                class: classes[k].clone(),
                precision,
                recall,
                f1,
                support,
            });
        }
        ClassReport {
            flows: n,
            accuracy: if n > 0 {
                correct as f64 / n as f64
            } else {
                f64::NAN
            },
            macro_f1: if present > 0 {
                f1_sum / present as f64
            } else {
                f64::NAN
            },
            per_class,
            confusion,
        }
    }

    /// The per-class table and the confusion matrix as text.
    pub fn table(&self) -> String {
        let w = self
            .per_class
            .iter()
            .map(|m| m.class.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = format!("{:<w$}  precision  recall     f1  support\n", "class");
        for m in &self.per_class {
            s += &format!(
                "{:<w$}  {:>9.3}  {:>6.3}  {:>5.3}  {:>7}\n",
                m.class, m.precision, m.recall, m.f1, m.support
            );
        }
        s += &format!(
            "accuracy {:.4}  macro-F1 {:.4}  ({} flows)\n\nconfusion (rows: true, columns: predicted)\n",
            self.accuracy, self.macro_f1, self.flows
        );
        let cw = self
            .confusion
            .iter()
            .flatten()
            .map(|x| x.to_string().len())
            .max()
            .unwrap_or(1)
            .max(3);
        let rw = w + 1 + self.per_class.len().to_string().len();
        s += &format!("{:<rw$}", "");
        for k in 0..self.per_class.len() {
            s += &format!(" {:>cw$}", k);
        }
        s.push('\n');
        for (k, row) in self.confusion.iter().enumerate() {
            s += &format!("{:<rw$}", format!("{k} {}", self.per_class[k].class));
            for x in row {
                s += &format!(" {x:>cw$}");
            }
            s.push('\n');
        }
        s
    }

    /// The confusion matrix as CSV with class names.
    pub fn confusion_csv(&self) -> String {
        let names: Vec<&str> = self.per_class.iter().map(|m| m.class.as_str()).collect();
        let mut s = format!("true\\predicted,{}\n", names.join(","));
        for (k, row) in self.confusion.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(u64::to_string).collect();
            s += &format!("{},{}\n", names[k], cells.join(","));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learns_definitions() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // scikit-learn: accuracy 0.5, f1 per class [0.8, 0.4, 0.0], macro 0.4.
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0, 0, 1, 0, 1, 1];
        let r = ClassReport::of(&truth, &pred, &classes);
        assert!((r.accuracy - 0.5).abs() < 1e-12);
        let f1: Vec<f64> = r.per_class.iter().map(|m| m.f1).collect();
        assert!((f1[0] - 0.8).abs() < 1e-12 && (f1[1] - 0.4).abs() < 1e-12 && f1[2] == 0.0);
        assert!((r.macro_f1 - 0.4).abs() < 1e-12);
        assert_eq!(
            r.confusion,
            vec![vec![2, 0, 0], vec![1, 1, 0], vec![0, 2, 0]]
        );
        assert!(r.table().contains("macro-F1 0.4000"));
        assert!(r
            .confusion_csv()
            .starts_with("true\\predicted,a,b,c\na,2,0,0\n"));
    }
}

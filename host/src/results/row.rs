//! One line of `results.jsonl`: one (member, pruner, sparsity) outcome.

use serde::{Deserialize, Serialize};

/// Whether the row holds a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Pruned and evaluated.
    Ok,
    /// The plugin failed, panicked or returned an invalid outcome; see `error`.
    Error,
}

/// What data a pruner's `prune` call was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataUse {
    /// None: the pruner declared it needs no data, and the host refused every data service.
    None,
    /// Calibration samples from the dataset's train split. Also what rows written before
    /// the field existed read as: every pruner was offered data then.
    #[default]
    Train,
    /// Gaussian inputs with the train images' pixel mean and covariance
    /// (`calib_data=moments`): two statistics of the images, no image.
    Moments,
}

impl DataUse {
    /// `none`, `train` or `moments`, as in `results.jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataUse::None => "none",
            DataUse::Train => "train",
            DataUse::Moments => "moments",
        }
    }
}

/// One benchmark result. Every field is always present; numbers that do not exist for an
/// error row are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// Zoo name.
    pub zoo: String,
    /// Member id.
    pub member: String,
    /// Architecture name.
    pub arch: String,
    /// Dataset name.
    pub dataset: String,
    /// Pruner name.
    pub pruner: String,
    /// Pruner version.
    pub pruner_version: String,
    /// Pruner options, defaults filled in; for a learned pruner `state` is its state's
    /// fingerprint; `sparsity_check: report` when the host only recorded the sparsity.
    pub options: serde_json::Value,
    /// The zoo a learned pruner's state was fitted on (`unknown` for a bare plugin state);
    /// null for pruners that learn nothing.
    #[serde(default)]
    pub fit_zoo: Option<String>,
    /// How a learned pruner's state was fitted: `ZOO, N train` and the fit options that differ
    /// from the plugin's defaults (`unknown` for a bare plugin state); null for pruners that
    /// learn nothing.
    #[serde(default)]
    pub fit: Option<String>,
    /// Seed of the request.
    pub seed: u64,
    /// Requested sparsity.
    pub requested_sparsity: f64,
    /// Requested compression ratio, 1 / (1 − requested sparsity).
    pub compression: f64,
    /// Achieved sparsity of the prunable weights.
    pub achieved_sparsity: Option<f64>,
    /// Achieved compression: prunable weights / nonzero prunable weights (ShrinkBench).
    pub achieved_compression: Option<f64>,
    /// Whole-model compression: all parameters / nonzero parameters (biases included).
    pub model_compression: Option<f64>,
    /// Theoretical speed-up: dense FLOPs / FLOPs of the masked model.
    pub flops_speedup: Option<f64>,
    /// Dense test accuracy of the member.
    pub dense_accuracy: f64,
    /// Dense test loss.
    pub dense_loss: f64,
    /// Test accuracy after pruning (no fine-tuning).
    pub pruned_accuracy: Option<f64>,
    /// Test loss after pruning.
    pub pruned_loss: Option<f64>,
    /// pruned_accuracy / dense_accuracy.
    pub retention: Option<f64>,
    /// Wall time of the plugin's `prune` call, seconds.
    pub prune_seconds: Option<f64>,
    /// Calibration samples the pruner used (0 for data-free pruners).
    pub calib_samples: u64,
    /// What data the pruner was given at prune time (`none` or `train`).
    #[serde(default)]
    pub data: DataUse,
    /// Ok or error.
    pub status: Status,
    /// The error message of an error row.
    pub error: Option<String>,
}

/// What is wrong with a result row (see [`ResultRow::check`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    /// A field whose value cannot be.
    #[error("field '{name}' is {value}, expected {expected}")]
    Field {
        /// The field's name in the JSON line.
        name: &'static str,
        /// Its value.
        value: f64,
        /// What it should be.
        expected: String,
    },
    /// An ok row without its pruned accuracy or retention.
    #[error("an ok row needs 'pruned_accuracy' and 'retention'; got null")]
    OkWithoutAccuracy,
    /// An error row without its message.
    #[error("an error row needs its 'error' message; got null")]
    ErrorWithoutMessage,
}

impl ResultRow {
    /// Checks every number against its meaning (accuracies and sparsities are fractions,
    /// the compression is 1 / (1 − sparsity), the retention is pruned / dense accuracy, times
    /// and losses are non-negative), so a row edited by hand or written by another tool never
    /// reaches a table as a number that cannot be.
    ///
    /// # Errors
    /// The first field that is wrong, its value and what was expected.
    pub fn check(&self) -> Result<(), RowError> {
        let field = |name: &'static str, value: f64, expected: &str| RowError::Field {
            name,
            value,
            expected: expected.to_string(),
        };
        let fraction = |name: &'static str, value: f64| {
            if (0.0..=1.0).contains(&value) { Ok(()) } else { Err(field(name, value, "a fraction in [0, 1]")) }
        };
        let at_least = |name: &'static str, value: f64, floor: f64, expected: &str| {
            if value.is_finite() && value >= floor { Ok(()) } else { Err(field(name, value, expected)) }
        };
        fraction("dense_accuracy", self.dense_accuracy)?;
        at_least("dense_loss", self.dense_loss, 0.0, "a non-negative loss")?;
        if !(0.0..1.0).contains(&self.requested_sparsity) {
            return Err(field("requested_sparsity", self.requested_sparsity, "a sparsity in [0, 1)"));
        }
        let compression = 1.0 / (1.0 - self.requested_sparsity);
        let off = (self.compression - compression).abs();
        if off.is_nan() || off > 1e-6 * compression {
            return Err(field(
                "compression",
                self.compression,
                &format!("1 / (1 - requested_sparsity) = {compression}"),
            ));
        }
        if let Some(s) = self.achieved_sparsity {
            fraction("achieved_sparsity", s)?;
        }
        for (name, value) in
            [("achieved_compression", self.achieved_compression), ("model_compression", self.model_compression)]
        {
            if let Some(v) = value {
                at_least(name, v, 1.0 - 1e-9, "a ratio of at least 1 (weights / kept weights)")?;
            }
        }
        if let Some(v) = self.flops_speedup.filter(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(field("flops_speedup", v, "a positive ratio"));
        }
        if let Some(p) = self.pruned_accuracy {
            fraction("pruned_accuracy", p)?;
        }
        if let Some(loss) = self.pruned_loss.filter(|l| l.is_nan() || *l < 0.0) {
            return Err(field("pruned_loss", loss, "a non-negative loss"));
        }
        if let Some(t) = self.prune_seconds {
            at_least("prune_seconds", t, 0.0, "a non-negative time in seconds")?;
        }
        if let Some(r) = self.retention {
            let expected = match self.pruned_accuracy {
                Some(p) if self.dense_accuracy > 0.0 => p / self.dense_accuracy,
                Some(_) => 0.0,
                None => return Err(field("retention", r, "null, as the row has no pruned_accuracy")),
            };
            let off = (r - expected).abs();
            if off.is_nan() || off > 1e-9 * expected.max(1.0) {
                return Err(field("retention", r, &format!("pruned_accuracy / dense_accuracy = {expected}")));
            }
        }
        match self.status {
            Status::Ok if self.pruned_accuracy.is_none() || self.retention.is_none() => {
                Err(RowError::OkWithoutAccuracy)
            }
            Status::Error if self.error.is_none() => Err(RowError::ErrorWithoutMessage),
            _ => Ok(()),
        }
    }

    /// The identity of a row for resuming: the same key is never run twice.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{:.9}|{}",
            self.zoo, self.member, self.pruner, self.options, self.requested_sparsity, self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_whose_numbers_cannot_be_is_refused_naming_the_field() {
        let good = crate::report::table::tests::row("0001", "magnitude", 0.5, Some(0.9), 0.1);
        good.check().unwrap();
        type Spoil = fn(&mut ResultRow);
        let cases: [(&str, Spoil); 7] = [
            ("retention", |r| r.retention = Some(5.0)),
            ("requested_sparsity", |r| r.requested_sparsity = 1.5),
            ("compression", |r| r.compression = 7.0),
            ("achieved_sparsity", |r| r.achieved_sparsity = Some(-0.1)),
            ("dense_accuracy", |r| r.dense_accuracy = 1.2),
            ("pruned_accuracy", |r| r.pruned_accuracy = Some(2.0)),
            ("prune_seconds", |r| r.prune_seconds = Some(-1.0)),
        ];
        for (name, spoil) in cases {
            let mut row = good.clone();
            spoil(&mut row);
            let e = row.check().unwrap_err();
            assert!(matches!(&e, RowError::Field { name: n, .. } if *n == name), "{name}: {e}");
            assert!(e.to_string().starts_with(&format!("field '{name}' is ")), "{name}: {e}");
        }
    }

    #[test]
    fn rows_written_before_the_data_field_still_parse() {
        let old = r#"{"zoo":"z","member":"0001","arch":"cnn-digits","dataset":"digits","pruner":"magnitude",
            "pruner_version":"0.1.0","options":{},"seed":0,"requested_sparsity":0.5,"compression":2.0,
            "achieved_sparsity":0.5,"achieved_compression":2.0,"model_compression":1.9,"flops_speedup":2.0,
            "dense_accuracy":0.9,"dense_loss":0.3,"pruned_accuracy":0.8,"pruned_loss":0.5,"retention":0.89,
            "prune_seconds":0.001,"calib_samples":0,"status":"ok","error":null}"#;
        let mut row: ResultRow = serde_json::from_str(old).unwrap();
        assert_eq!(row.data, DataUse::Train);
        row.data = DataUse::None;
        assert_eq!(serde_json::to_value(&row).unwrap()["data"], "none");
    }
}

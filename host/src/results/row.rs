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
}

impl DataUse {
    /// `none` or `train`, as in `results.jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataUse::None => "none",
            DataUse::Train => "train",
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

impl ResultRow {
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

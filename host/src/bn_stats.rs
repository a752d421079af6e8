//! What happens to a pruned network's batch normalisation statistics before it is evaluated
//! (`--bn-correct`, `--bn-recalibrate N`, on `prune`, `eval` and `bench`).
//!
//! Pruning a conv changes its outputs' distribution, and the batch normalisation after it
//! keeps normalising with the dense network's running statistics: without a fix, a ResNet
//! table measures stale statistics as much as the mask. Two fixes, neither changing a weight:
//! re-estimating the statistics from training images (data: the row's `data` column says
//! `train`), or correcting them from the weights alone (`hyperprune_core::batchnorm`, data
//! free). A network without batch normalisation is unaffected by either.

use hyperprune_core::Model;
use hyperprune_core::engine::{Engine, EngineError};

use crate::calibration::TrainSplit;
use crate::failure::bad_input;

/// The seed of the recalibration images' draw from the train split.
const RECALIBRATION_SEED: u64 = 0x6e5;

/// Why the batch normalisation statistics could not be fixed.
#[derive(Debug, thiserror::Error)]
pub enum BnStatsError {
    /// Correcting them from the weights failed (core's message).
    #[error("{0}")]
    Correct(String),
    /// `--bn-recalibrate` in a run without a dataset.
    #[error("--bn-recalibrate needs a dataset to draw training images from")]
    NoDataset,
    /// The engine failed to re-estimate them.
    #[error("recalibrating batch norm: {0}")]
    Recalibrate(EngineError),
}

/// What is done to the batch normalisation statistics of a pruned network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BnStats {
    /// Left as the dense network's.
    #[default]
    Stale,
    /// Corrected from the weights alone (data-free).
    Correct,
    /// Re-estimated from this many training images.
    Recalibrate(u64),
}

impl BnStats {
    /// From `--bn-correct` and `--bn-recalibrate N`.
    ///
    /// # Errors
    /// Bad input when both are given.
    pub fn from_args(correct: bool, recalibrate: Option<u64>) -> anyhow::Result<BnStats> {
        match (correct, recalibrate) {
            (true, Some(n)) => Err(bad_input(format!(
                "--bn-correct and --bn-recalibrate {n} are two ways to fix the same statistics: give one"
            ))),
            (true, None) => Ok(BnStats::Correct),
            (false, Some(n)) => Ok(BnStats::Recalibrate(n)),
            (false, None) => Ok(BnStats::Stale),
        }
    }

    /// Whether it reads training images.
    pub fn uses_data(self) -> bool {
        matches!(self, BnStats::Recalibrate(_))
    }

    /// The value recorded in a result row's options (`bn_stats`), when not stale.
    pub fn option(self) -> Option<String> {
        match self {
            BnStats::Stale => None,
            BnStats::Correct => Some("correct".into()),
            BnStats::Recalibrate(n) => Some(format!("recalibrate {n}")),
        }
    }

    /// `pruned` with its batch normalisation statistics fixed; `dense` is the model before
    /// pruning, `split` the dataset's train split (needed to recalibrate).
    ///
    /// # Errors
    /// Recalibrating without a dataset, or the correction or the engine failed.
    pub fn apply(
        self,
        engine: &dyn Engine,
        dense: &Model,
        pruned: Model,
        split: Option<&TrainSplit<'_>>,
    ) -> Result<Model, BnStatsError> {
        match self {
            BnStats::Stale => Ok(pruned),
            BnStats::Correct => {
                hyperprune_core::batchnorm::correct_batchnorm(dense, &pruned).map_err(BnStatsError::Correct)
            }
            BnStats::Recalibrate(n) => {
                let split = split.ok_or(BnStatsError::NoDataset)?;
                let samples = split.calibration(n as usize, RECALIBRATION_SEED);
                engine.recalibrate_batchnorm(&pruned, &samples).map_err(BnStatsError::Recalibrate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_fixes_exclude_each_other_and_name_themselves_in_rows() {
        assert!(crate::failure::is_bad_input(&BnStats::from_args(true, Some(8)).unwrap_err()));
        assert_eq!(BnStats::from_args(false, None).unwrap(), BnStats::Stale);
        assert_eq!(BnStats::from_args(true, None).unwrap().option().as_deref(), Some("correct"));
        let recalibrate = BnStats::from_args(false, Some(1000)).unwrap();
        assert_eq!((recalibrate.option().as_deref(), recalibrate.uses_data()), (Some("recalibrate 1000"), true));
        assert!(!BnStats::Correct.uses_data() && BnStats::Stale.option().is_none());
    }
}

//! What a pruner returns: bit-packed masks and, optionally, new values for kept weights.

use abi_stable::StableAbi;
use abi_stable::std_types::{ROption, RString, RVec};

use crate::model::ModelRef;

/// The mask of one layer, and optionally its updated weights.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct LayerMask {
    /// Tensor name, as in the request's [`crate::LayerRef::name`].
    pub name: RString,
    /// Number of weights the mask covers.
    pub len: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`, least significant first) is 1 when weight `i`
    /// is **kept**. Length `ceil(len / 64)`.
    pub keep_bits: RVec<u64>,
    /// New values for the weights (OBS-family updates), full length `len`; the values at
    /// pruned positions are ignored (the host zeroes them).
    pub new_weights: ROption<RVec<f32>>,
}

impl LayerMask {
    /// Packs a keep mask (`true` = kept).
    pub fn from_keep(name: &str, keep: &[bool]) -> LayerMask {
        LayerMask {
            name: name.into(),
            len: keep.len() as u64,
            keep_bits: pack(keep).into(),
            new_weights: ROption::RNone,
        }
    }

    /// Whether weight `i` is kept.
    ///
    /// # Panics
    /// When `i >= len` or the bit vector is shorter than `len` needs.
    pub fn is_kept(&self, i: usize) -> bool {
        assert!((i as u64) < self.len, "index {i} outside a mask of {} weights", self.len);
        self.keep_bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// The unpacked keep mask.
    pub fn keep(&self) -> Vec<bool> {
        unpack(&self.keep_bits, self.len as usize)
    }

    /// Number of kept weights (counting only the first `len` bits).
    pub fn kept_count(&self) -> usize {
        let full = (self.len / 64) as usize;
        let mut n: usize = self.keep_bits.iter().take(full).map(|w| w.count_ones() as usize).sum();
        let rest = self.len % 64;
        if let Some(w) = self.keep_bits.get(full).filter(|_| rest > 0) {
            n += (w & ((1u64 << rest) - 1)).count_ones() as usize;
        }
        n
    }
}

/// Everything a pruner returns for one request: one [`LayerMask`] per prunable layer, in
/// the order of [`ModelRef::layers`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PruneOutcome {
    /// The masks, one per layer.
    pub layers: RVec<LayerMask>,
}

impl PruneOutcome {
    /// Packs keep masks, one per layer of `model`, in order.
    ///
    /// # Panics
    /// When the number of masks differs from the number of layers.
    pub fn from_keep(model: &ModelRef<'_>, keep: &[Vec<bool>]) -> PruneOutcome {
        assert_eq!(model.layers.len(), keep.len(), "one keep mask per layer");
        PruneOutcome {
            layers: model.layers.iter().zip(keep).map(|(l, k)| LayerMask::from_keep(l.name.as_str(), k)).collect(),
        }
    }

    /// Attaches new weights to every layer (for pruners that update the kept weights).
    ///
    /// # Panics
    /// When the number of weight vectors differs from the number of layers.
    pub fn with_new_weights(mut self, weights: Vec<Vec<f32>>) -> PruneOutcome {
        assert_eq!(self.layers.len(), weights.len(), "one weight vector per layer");
        for (layer, w) in self.layers.iter_mut().zip(weights) {
            layer.new_weights = ROption::RSome(w.into());
        }
        self
    }

    /// Total number of pruned weights.
    pub fn pruned_count(&self) -> usize {
        self.layers.iter().map(|l| l.len as usize - l.kept_count()).sum()
    }
}

/// Packs `keep` into 64-bit words, least significant bit first.
pub fn pack(keep: &[bool]) -> Vec<u64> {
    let mut words = vec![0u64; keep.len().div_ceil(64)];
    for (i, &k) in keep.iter().enumerate() {
        if k {
            words[i / 64] |= 1 << (i % 64);
        }
    }
    words
}

/// Unpacks the first `len` bits of `words`; missing words read as zeros.
pub fn unpack(words: &[u64], len: usize) -> Vec<bool> {
    (0..len).map(|i| words.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip_across_word_boundaries() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            let keep: Vec<bool> = (0..len).map(|i| i % 3 == 0 || i % 7 == 1).collect();
            let mask = LayerMask::from_keep("w", &keep);
            assert_eq!(mask.keep(), keep);
            assert_eq!(mask.kept_count(), keep.iter().filter(|&&k| k).count());
            assert_eq!(mask.keep_bits.len(), len.div_ceil(64));
        }
    }

    #[test]
    fn kept_count_ignores_stray_bits_past_len() {
        let mask =
            LayerMask { name: "w".into(), len: 3, keep_bits: vec![u64::MAX].into(), new_weights: ROption::RNone };
        assert_eq!(mask.kept_count(), 3);
    }
}

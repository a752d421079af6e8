//! Compression and cost metrics, with ShrinkBench's definitions (Blalock et al., 2020).
//!
//! - **compression** = prunable weights / nonzero prunable weights (= 1 / (1 − sparsity));
//! - **model compression** = all parameters / nonzero parameters, biases included;
//! - **FLOPs** = multiply-accumulates of conv and linear layers, counting only nonzero
//!   weights: `nnz(W) · H_out · W_out` for a conv, `nnz(W)` for a linear layer, per image.
//!   Activations, pooling and biases are not counted (they are the same for every mask).
//!   The theoretical speed-up is dense FLOPs / masked FLOPs.

use crate::arch::{FeatureShape, LayerSpec};
use crate::model::Model;

/// The compression figures of one (pruned) model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compression {
    /// Pruned prunable weights / prunable weights.
    pub sparsity: f64,
    /// Prunable weights / nonzero prunable weights.
    pub compression: f64,
    /// All parameters / nonzero parameters.
    pub model_compression: f64,
    /// Multiply-accumulates per image of the dense network.
    pub dense_flops: u64,
    /// Multiply-accumulates per image counting only nonzero weights.
    pub flops: u64,
}

impl Compression {
    /// Dense FLOPs / masked FLOPs.
    pub fn speedup(&self) -> f64 {
        if self.flops == 0 { f64::INFINITY } else { self.dense_flops as f64 / self.flops as f64 }
    }
}

/// Ratio `a / b`, infinite when `b` is zero.
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { f64::INFINITY } else { a as f64 / b as f64 }
}

/// Measures `model` (zeros count as pruned).
pub fn compression(model: &Model) -> Compression {
    let nnz = |v: &[f32]| v.iter().filter(|&&x| x != 0.0).count();
    let prunable: usize = model.prunable().map(|(_, w)| w.len()).sum();
    let prunable_nnz: usize = model.prunable().map(|(_, w)| nnz(w)).sum();
    let all: usize = model.values().iter().map(Vec::len).sum();
    let all_nnz: usize = model.values().iter().map(|v| nnz(v)).sum();
    let outputs = model.spec().shapes().unwrap_or_default();
    let (mut dense_flops, mut flops) = (0u64, 0u64);
    for (p, w) in model.prunable() {
        let positions = match (&model.spec().layers[p.layer], outputs.get(p.layer)) {
            (LayerSpec::Conv2d { .. }, Some(FeatureShape::Map { h, w, .. })) => (h * w) as u64,
            _ => 1,
        };
        dense_flops += w.len() as u64 * positions;
        flops += nnz(w) as u64 * positions;
    }
    Compression {
        sparsity: if prunable == 0 { 0.0 } else { 1.0 - prunable_nnz as f64 / prunable as f64 },
        compression: ratio(prunable, prunable_nnz),
        model_compression: ratio(all, all_nnz),
        dense_flops,
        flops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnn_s_flops_and_compression_by_hand() {
        let spec = crate::preset("cnn-s").unwrap();
        let mut model =
            Model::new(spec.clone(), spec.params().unwrap().iter().map(|p| vec![1.0; p.numel()]).collect()).unwrap();
        // conv1 200 weights × 24·24, conv2 1200 × 8·8, conv3 96 × 3·3, fc 720 and 200.
        let dense = 200 * 576 + 1200 * 64 + 96 * 9 + 720 + 200;
        let c = compression(&model);
        assert_eq!((c.dense_flops, c.flops), (dense, dense));
        assert_eq!((c.compression, c.model_compression, c.sparsity), (1.0, 1.0, 0.0));
        // Zero half of conv2 (600 weights): 600·64 fewer MACs.
        model.values_mut()[2][..600].fill(0.0);
        let c = compression(&model);
        assert_eq!(c.flops, dense - 600 * 64);
        assert!((c.compression - 2416.0 / 1816.0).abs() < 1e-12);
        assert!((c.model_compression - 2464.0 / 1864.0).abs() < 1e-12);
        assert!((c.sparsity - 600.0 / 2416.0).abs() < 1e-12);
    }
}

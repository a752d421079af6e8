//! Batch normalisation over the channels of a `[N, C, H, W]` map, as PyTorch's
//! `nn.BatchNorm2d`.
//!
//! Train mode normalises with the batch's statistics over `N·H·W` and returns the running
//! statistics that PyTorch would hold after the step; eval mode normalises with the running
//! statistics and changes nothing. Which mode runs is the caller's choice: the training step
//! alone runs train mode, everything else (evaluation, logits, calibration) eval mode.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The tensors and settings of one batch normalisation layer, as flat `[C]` tensors.
pub(super) struct BatchNormParams<Bk: Backend> {
    /// `γ`.
    pub scale: Tensor<Bk, 1>,
    /// `β`.
    pub shift: Tensor<Bk, 1>,
    /// Running mean.
    pub mean: Tensor<Bk, 1>,
    /// Running (unbiased) variance.
    pub var: Tensor<Bk, 1>,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the batch in the running statistics.
    pub momentum: f64,
}

/// The running statistics after a train-mode pass, detached from the graph.
pub(super) struct RunningStats<Bk: Backend> {
    /// `(1 − momentum) · running_mean + momentum · batch_mean`, `[C]`.
    pub mean: Tensor<Bk, 1>,
    /// `(1 − momentum) · running_var + momentum · unbiased_batch_var`, `[C]`.
    pub var: Tensor<Bk, 1>,
}

/// `γ · (x − running_mean) / √(running_var + ε) + β`, per channel.
///
/// # Shapes
/// - `x`: `[n, c, h, w]`, every tensor of `bn`: `[c]`
/// - returns `[n, c, h, w]`
pub(super) fn batch_norm_eval<Bk: Backend>(x: Tensor<Bk, 4>, bn: &BatchNormParams<Bk>) -> Tensor<Bk, 4> {
    let c = bn.scale.dims()[0];
    let channel = |t: &Tensor<Bk, 1>| t.clone().reshape([1, c, 1, 1]);
    // Fold the statistics into one factor and one offset per channel: two `[c]` ops and
    // two full-map ops instead of four full-map ops.
    let factor = bn.scale.clone() / bn.var.clone().add_scalar(bn.eps).sqrt();
    let offset = bn.shift.clone() - bn.mean.clone() * factor.clone();
    x * channel(&factor) + channel(&offset)
}

/// `γ · (x − μ_B) / √(σ²_B + ε) + β` with the batch mean `μ_B` and biased variance `σ²_B`
/// over `N·H·W`, and the running statistics this batch leaves behind (variance made
/// unbiased, `n/(n − 1) · σ²_B`, as PyTorch does).
///
/// The caller must ensure `N·H·W > 1`; with a single value per channel the unbiased
/// variance is undefined (PyTorch refuses such a batch in train mode).
///
/// # Shapes
/// - `x`: `[n, c, h, w]`, every tensor of `bn`: `[c]`
/// - returns `[n, c, h, w]` and two `[c]` tensors
pub(super) fn batch_norm_train<Bk: Backend>(
    x: Tensor<Bk, 4>,
    bn: &BatchNormParams<Bk>,
) -> (Tensor<Bk, 4>, RunningStats<Bk>) {
    let [n, c, h, w] = x.dims();
    let values = (n * h * w) as f64;
    let mean = x.clone().mean_dims(&[0, 2, 3]); // [1, c, 1, 1]
    let centred = x - mean.clone();
    let var = centred.clone().square().mean_dims(&[0, 2, 3]);
    let channel = |t: &Tensor<Bk, 1>| t.clone().reshape([1, c, 1, 1]);
    let y = centred / var.clone().add_scalar(bn.eps).sqrt() * channel(&bn.scale) + channel(&bn.shift);
    let m = bn.momentum;
    let batch_mean = mean.detach().reshape([c]);
    let unbiased = var.detach().reshape([c]).mul_scalar(values / (values - 1.0));
    let running = RunningStats {
        mean: bn.mean.clone().detach().mul_scalar(1.0 - m) + batch_mean.mul_scalar(m),
        var: bn.var.clone().detach().mul_scalar(1.0 - m) + unbiased.mul_scalar(m),
    };
    (y, running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::download;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    type Bk = Flex;

    fn flat(values: &[f32]) -> Tensor<Bk, 1> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &Default::default())
    }

    /// `x[n][c][h·w]`, N = 2, C = 2, 2×2 maps: channel 0 holds 1..8, channel 1 holds
    /// 0, 2, 4, ..., 14 with one outlier, so the two channels have different statistics.
    fn input() -> Tensor<Bk, 4> {
        let x = [
            1.0, 2.0, 3.0, 4.0, // n 0, c 0
            0.0, 2.0, 4.0, 6.0, // n 0, c 1
            5.0, 6.0, 7.0, 8.0, // n 1, c 0
            8.0, 10.0, 12.0, 30.0, // n 1, c 1
        ];
        Tensor::from_data(TensorData::new(x.to_vec(), [2, 2, 2, 2]), &Default::default())
    }

    fn params() -> BatchNormParams<Bk> {
        BatchNormParams {
            scale: flat(&[2.0, 0.5]),
            shift: flat(&[1.0, -1.0]),
            mean: flat(&[0.5, -2.0]),
            var: flat(&[4.0, 0.25]),
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    /// f32 arithmetic on values below 100: relative error ~1e-6; 1e-5 absolute on outputs
    /// of O(1)–O(10) leaves margin while any wrong statistic is off by O(0.1) or more.
    const TOLERANCE: f64 = 1e-5;

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= TOLERANCE * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}; {got:?}");
        }
    }

    #[test]
    fn train_mode_uses_batch_statistics_and_updates_running_stats_as_pytorch() {
        let (y, running) = batch_norm_train(input(), &params());
        // Channel 0: values 1..8, mean 4.5, biased var = (2·(3.5²+2.5²+1.5²+0.5²))/8 = 5.25,
        // unbiased = 5.25 · 8/7 = 6.
        // Channel 1: 0,2,4,6,8,10,12,30 sum 72, mean 9; squared deviations
        // 81+49+25+9+1+1+9+441 = 616, biased var 77, unbiased 88.
        let (m0, v0, m1, v1) = (4.5f64, 5.25f64, 9.0f64, 77.0f64);
        let x = download(input());
        let mut want = Vec::new();
        for n in 0..2 {
            for (c, (m, v, g, b)) in [(m0, v0, 2.0, 1.0), (m1, v1, 0.5, -1.0)].into_iter().enumerate() {
                for k in 0..4 {
                    let xv = x[(n * 2 + c) * 4 + k] as f64;
                    want.push(g * (xv - m) / (v + 1e-5).sqrt() + b);
                }
            }
        }
        assert_close(&download(y), &want, "y");
        // running = 0.9 · old + 0.1 · batch: mean 0.9·0.5 + 0.45 = 0.9, 0.9·(−2) + 0.9 = −0.9;
        // var 0.9·4 + 0.1·6 = 4.2, 0.9·0.25 + 0.1·88 = 9.025.
        assert_close(&download(running.mean), &[0.9, -0.9], "running_mean");
        assert_close(&download(running.var), &[4.2, 9.025], "running_var");
    }

    #[test]
    fn eval_mode_uses_running_statistics() {
        let bn = params();
        let y = download(batch_norm_eval(input(), &bn));
        let x = download(input());
        let per_channel = [(0.5f64, 4.0f64, 2.0, 1.0), (-2.0, 0.25, 0.5, -1.0)];
        let want: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &xv)| {
                let (m, v, g, b) = per_channel[(i / 4) % 2];
                g * (xv as f64 - m) / (v + 1e-5).sqrt() + b
            })
            .collect();
        assert_close(&y, &want, "y");
        // Spot check by hand: x = 1 in channel 0 is 2 · 0.5 / 2 + 1 = 1.5 (eps aside).
        assert!((y[0] - 1.5).abs() < 1e-5, "{}", y[0]);
    }
}

//! Adam and SGD with momentum, applied to flat parameter tensors.
//!
//! Written out rather than taken from `burn::optim`, whose optimisers expect a
//! `#[derive(Module)]` record; here the network is built at run time from a spec. The
//! update rules are PyTorch's (`torch.optim.Adam`, `torch.optim.SGD` with dampening 0),
//! L2 weight decay added to the gradient of every trained parameter (biases and batch norm
//! scales and shifts included, as `torch.optim` does with one parameter group), so a zoo
//! trained here matches one trained there given the same data order. Tensors without a
//! gradient (batch norm buffers) are left alone.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use hyperprune_core::engine::Optimizer;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// The state of one optimiser over a list of parameters.
pub(super) struct OptimizerState<Bk: Backend> {
    kind: Optimizer,
    lr: f64,
    weight_decay: f64,
    steps: i32,
    /// Adam's first moment, or SGD's momentum buffer.
    first: Vec<Option<Tensor<Bk, 1>>>,
    /// Adam's second moment.
    second: Vec<Option<Tensor<Bk, 1>>>,
}

impl<Bk: Backend> OptimizerState<Bk> {
    /// A fresh state for `params` parameters.
    pub fn new(kind: Optimizer, lr: f32, weight_decay: f32, params: usize) -> Self {
        OptimizerState {
            kind,
            lr: lr as f64,
            weight_decay: weight_decay as f64,
            steps: 0,
            first: vec![None; params],
            second: vec![None; params],
        }
    }

    /// One update of every parameter from its gradient; a parameter whose gradient is
    /// `None` is not trained and stays as it is.
    ///
    /// # Shapes
    /// - `params[i]`, `grads[i]`: the same `[numel]`
    pub fn step(&mut self, params: &mut [Tensor<Bk, 1>], grads: Vec<Option<Tensor<Bk, 1>>>) {
        self.steps += 1;
        for (i, (w, g)) in params.iter_mut().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let g = if self.weight_decay != 0.0 { g + w.clone().mul_scalar(self.weight_decay) } else { g };
            let delta = match self.kind {
                Optimizer::Adam => self.adam(i, g),
                Optimizer::Sgd { momentum } => self.sgd(i, g, momentum as f64),
            };
            *w = w.clone() - delta;
        }
    }

    /// `lr · m̂ / (√v̂ + ε)` in PyTorch's arrangement: `(lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)`.
    fn adam(&mut self, i: usize, g: Tensor<Bk, 1>) -> Tensor<Bk, 1> {
        let m = match self.first[i].take() {
            Some(m) => m.mul_scalar(BETA1) + g.clone().mul_scalar(1.0 - BETA1),
            None => g.clone().mul_scalar(1.0 - BETA1),
        };
        let g2 = g.clone() * g;
        let v = match self.second[i].take() {
            Some(v) => v.mul_scalar(BETA2) + g2.mul_scalar(1.0 - BETA2),
            None => g2.mul_scalar(1.0 - BETA2),
        };
        let t = self.steps;
        let step_size = self.lr / (1.0 - BETA1.powi(t));
        let denom = v.clone().sqrt().div_scalar((1.0 - BETA2.powi(t)).sqrt()).add_scalar(EPS);
        let delta = (m.clone() / denom).mul_scalar(step_size);
        self.first[i] = Some(m);
        self.second[i] = Some(v);
        delta
    }

    /// `lr · b` with `b ← μ b + g` (`b = g` on the first step).
    fn sgd(&mut self, i: usize, g: Tensor<Bk, 1>, momentum: f64) -> Tensor<Bk, 1> {
        if momentum == 0.0 {
            return g.mul_scalar(self.lr);
        }
        let b = match self.first[i].take() {
            Some(b) => b.mul_scalar(momentum) + g,
            None => g,
        };
        self.first[i] = Some(b.clone());
        b.mul_scalar(self.lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn run(kind: Optimizer, grads: &[f32]) -> f32 {
        let device = Default::default();
        let mut params = vec![Tensor::<Flex, 1>::from_data(TensorData::new(vec![1.0f32], [1]), &device)];
        let mut state = OptimizerState::new(kind, 0.1, 0.5, 1);
        for &g in grads {
            state.step(&mut params, vec![Some(Tensor::from_data(TensorData::new(vec![g], [1]), &device))]);
        }
        params[0].to_data().to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn updates_follow_the_pytorch_rules_by_hand() {
        // SGD, momentum .9, wd .5, lr .1, w0 = 1: g1 = 2 + .5 = 2.5, b = 2.5, w = .75;
        // g2 = -1 + .375 = -.625, b = 2.25 - .625 = 1.625, w = .75 - .1625 = .5875.
        let w = run(Optimizer::Sgd { momentum: 0.9 }, &[2.0, -1.0]);
        assert!((w - 0.5875).abs() < 1e-6, "{w}");
        // Adam's first step moves by lr·sign(g) (up to ε): g1 = 2.5, w = .9.
        let w = run(Optimizer::Adam, &[2.0]);
        assert!((w - 0.9).abs() < 1e-6, "{w}");
        // Second step, by hand: g2 = -1 + .45 = -.55; m = .09·2.5·... computed in f64.
        let (g1, g2) = (2.5f64, -1.0 + 0.5 * 0.9);
        let m = 0.9 * 0.1 * g1 + 0.1 * g2;
        let v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2;
        let want = 0.9 - 0.1 / (1.0 - 0.81) * m / (v.sqrt() / (1.0f64 - 0.999 * 0.999).sqrt() + 1e-8);
        let w = run(Optimizer::Adam, &[2.0, -1.0]);
        assert!((w as f64 - want).abs() < 1e-6, "{w} vs {want}");
    }
}

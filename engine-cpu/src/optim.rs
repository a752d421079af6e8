//! Adam and SGD with momentum over one member's flat parameter vector.
//!
//! The update rules are PyTorch's (`torch.optim.Adam`, `torch.optim.SGD` with dampening 0),
//! with L2 weight decay added to the gradient of every trained parameter (biases and batch
//! norm scales and shifts included), and the same arrangement of the arithmetic as the burn
//! engine's optimiser, so the two engines round alike. Batch norm buffers (running
//! statistics) are not trained: the optimiser skips them, decay included.

use std::ops::Range;

use hyperprune_core::engine::Optimizer;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// The state of one member's optimiser.
#[derive(Debug, Clone)]
pub(crate) struct OptimizerState {
    kind: Optimizer,
    lr: f64,
    weight_decay: f64,
    steps: i32,
    /// The ranges of the flat parameters it updates.
    trained: Vec<Range<usize>>,
    /// Adam's first moment, or SGD's momentum buffer.
    first: Vec<f32>,
    /// Adam's second moment.
    second: Vec<f32>,
}

impl OptimizerState {
    /// A fresh state for `len` parameters, of which it updates those in `trained`.
    pub fn new(kind: Optimizer, lr: f32, weight_decay: f32, len: usize, trained: Vec<Range<usize>>) -> Self {
        assert!(trained.iter().all(|r| r.end <= len), "trained ranges lie inside the parameters");
        let second = if kind == Optimizer::Adam { vec![0.0; len] } else { Vec::new() };
        OptimizerState {
            kind,
            lr: lr as f64,
            weight_decay: weight_decay as f64,
            steps: 0,
            trained,
            first: vec![0.0; len],
            second,
        }
    }

    /// One update of every trained parameter from its gradient.
    ///
    /// # Shapes
    /// - `params`, `grad`: the same `[len]`
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) {
        assert_eq!(params.len(), grad.len());
        self.steps += 1;
        for r in 0..self.trained.len() {
            let range = self.trained[r].clone();
            self.step_range(&mut params[range.clone()], &grad[range.clone()], range);
        }
    }

    /// The update of the parameters in `range` (`params` and `grad` are that range).
    fn step_range(&mut self, params: &mut [f32], grad: &[f32], range: Range<usize>) {
        let wd = self.weight_decay as f32;
        let decayed = |w: f32, g: f32| if wd != 0.0 { g + w * wd } else { g };
        match self.kind {
            Optimizer::Adam => {
                // lr·m̂/(√v̂ + ε) as (lr/(1 − β₁ᵗ))·m / (√v/√(1 − β₂ᵗ) + ε); a zero moment
                // makes the first step's m = (1 − β₁)·g exactly.
                let t = self.steps;
                let (b1, b2) = (BETA1 as f32, BETA2 as f32);
                let (c1, c2) = ((1.0 - BETA1) as f32, (1.0 - BETA2) as f32);
                let step_size = (self.lr / (1.0 - BETA1.powi(t))) as f32;
                let root_bias = ((1.0 - BETA2.powi(t)).sqrt()) as f32;
                let eps = EPS as f32;
                let (first, second) = (&mut self.first[range.clone()], &mut self.second[range]);
                for (((w, &g), m), v) in params.iter_mut().zip(grad).zip(first).zip(second) {
                    let g = decayed(*w, g);
                    *m = *m * b1 + g * c1;
                    *v = *v * b2 + (g * g) * c2;
                    let denom = v.sqrt() / root_bias + eps;
                    *w -= (*m / denom) * step_size;
                }
            }
            Optimizer::Sgd { momentum } => {
                let lr = self.lr as f32;
                for ((w, &g), b) in params.iter_mut().zip(grad).zip(&mut self.first[range]) {
                    let g = decayed(*w, g);
                    // b ← μ·b + g, with b = g on the first step (0·μ + g is exactly g).
                    let d = if momentum == 0.0 { g } else { *b * momentum + g };
                    *b = d;
                    *w -= d * lr;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: Optimizer, grads: &[f32]) -> f32 {
        let mut w = [1.0f32];
        let everything = 0..1;
        let mut state = OptimizerState::new(kind, 0.1, 0.5, 1, vec![everything]);
        for &g in grads {
            state.step(&mut w, &[g]);
        }
        w[0]
    }

    #[test]
    fn updates_follow_the_pytorch_rules_by_hand() {
        // SGD, momentum .9, wd .5, lr .1, w0 = 1: g1 = 2 + .5 = 2.5, b = 2.5, w = .75;
        // g2 = -1 + .375 = -.625, b = 2.25 - .625 = 1.625, w = .75 - .1625 = .5875.
        let w = run(Optimizer::Sgd { momentum: 0.9 }, &[2.0, -1.0]);
        assert!((w - 0.5875).abs() < 1e-6, "{w}");
        // Plain SGD: w = 1 - .1·2.5.
        assert!((run(Optimizer::Sgd { momentum: 0.0 }, &[2.0]) - 0.75).abs() < 1e-6);
        // Adam's first step moves by lr·sign(g) (up to ε): g1 = 2.5, w = .9.
        let w = run(Optimizer::Adam, &[2.0]);
        assert!((w - 0.9).abs() < 1e-6, "{w}");
        // Second step by hand in f64: g2 = -1 + .5·.9 = -.55.
        let (g1, g2) = (2.5f64, -0.55f64);
        let m = 0.9 * 0.1 * g1 + 0.1 * g2;
        let v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2;
        let want = 0.9 - 0.1 * (m / (1.0 - 0.81)) / ((v / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-8);
        let w = run(Optimizer::Adam, &[2.0, -1.0]);
        assert!((w as f64 - want).abs() < 1e-6, "{w} {want}");
    }

    #[test]
    fn parameters_outside_the_trained_ranges_never_move() {
        for kind in [Optimizer::Adam, Optimizer::Sgd { momentum: 0.9 }] {
            let mut w = [1.0f32; 5];
            let mut state = OptimizerState::new(kind, 0.1, 0.5, 5, vec![0..2, 4..5]);
            for _ in 0..3 {
                state.step(&mut w, &[1.0; 5]);
            }
            // No gradient step and no decay for the two buffers in the middle.
            assert_eq!(&w[2..4], &[1.0, 1.0], "{kind:?}");
            assert!(w[0] < 1.0 && w[1] == w[0] && w[4] == w[0], "{kind:?}: {w:?}");
        }
    }
}

//! Data-free correction of batch normalisation statistics after pruning.
//!
//! Pruning a conv changes the distribution of its outputs, but a batch normalisation after it
//! still normalises with the running mean and variance of the dense network: the pruned
//! network is measured with stale statistics. Re-estimating them needs training images
//! (`--bn-recalibrate`); this module estimates them from the weights alone, so a data-free
//! pruner stays data-free end to end.
//!
//! The estimate propagates per-channel means and variances through the graph, under the
//! usual independence assumption (inputs of a unit uncorrelated, a feature map's positions
//! alike), for the dense and for the pruned network side by side:
//!
//! - conv and linear: `mean_o = Σ_i (Σ_k w_oik) · m_i + b_o`, `var_o = Σ_i (Σ_k w_oik²) · v_i`;
//! - batch normalisation (eval mode): an affine map per channel;
//! - ReLU: the moments of a rectified Gaussian; other activations leave the moments as they
//!   are (an approximation, said here rather than hidden);
//! - add: means and variances add; pooling and flatten keep them (flatten repeats a channel's
//!   moments over its positions; global average pooling keeps the mean).
//!
//! The estimate is used as a *correction* of the dense running statistics, not in their place:
//! for every batch normalisation, `mean' = mean_dense + (m̂_pruned − m̂_dense)` and
//! `var' = var_dense · v̂_pruned / v̂_dense`, so what the independence assumption gets wrong
//! about the dense network cancels. The network input's moments are not known without data:
//! they are solved for from the first batch normalisation's dense statistics (least squares on
//! its conv's linear map of the input moments), and otherwise taken as mean 0, variance 1.

use crate::arch::{FeatureShape, Graph, LayerSpec, ParamRole, Source};
use crate::model::Model;

/// Per-channel first and second moments of a node's output.
#[derive(Debug, Clone, PartialEq)]
struct Moments {
    mean: Vec<f64>,
    var: Vec<f64>,
}

impl Moments {
    fn uniform(channels: usize, mean: f64, var: f64) -> Moments {
        Moments { mean: vec![mean; channels], var: vec![var; channels] }
    }
}

/// The pruned model with every batch normalisation's running statistics corrected for the
/// pruning, estimated from the weights alone (see the module documentation). `dense` is the
/// model before pruning (its statistics are the ones measured); `pruned` has the same
/// architecture with weights masked (or updated).
///
/// # Errors
/// A message when the two models do not share an architecture.
pub fn correct_batchnorm(dense: &Model, pruned: &Model) -> Result<Model, String> {
    if dense.spec() != pruned.spec() {
        return Err(format!(
            "the pruned model's architecture '{}' is not the dense model's '{}'",
            pruned.spec().name,
            dense.spec().name
        ));
    }
    let spec = dense.spec();
    let graph = spec.graph().map_err(|e| e.to_string())?;
    let input = input_moments(dense, &graph);
    let (mut d, mut p): (Vec<Moments>, Vec<Moments>) = (Vec::new(), Vec::new());
    let mut out = pruned.clone();
    for node in &graph.nodes {
        let read = |all: &[Moments], k: usize| -> Moments {
            match node.inputs[k] {
                Source::Network => input.clone(),
                Source::Node(j) => all[j].clone(),
            }
        };
        let (dm, pm) = match &spec.layers[node.layer] {
            LayerSpec::Conv2d { .. } | LayerSpec::Linear { .. } => {
                let (dx, px) = (read(&d, 0), read(&p, 0));
                (affine(dense, node.layer, &dx), affine(pruned, node.layer, &px))
            }
            LayerSpec::BatchNorm2d { eps, .. } => {
                let (dx, px) = (read(&d, 0), read(&p, 0));
                let (mean, var) = (tensor(dense, node.layer, "running_mean"), tensor(dense, node.layer, "running_var"));
                let corrected_mean: Vec<f64> =
                    mean.iter().zip(&px.mean).zip(&dx.mean).map(|((m, pm), dm)| m + (pm - dm)).collect();
                let corrected_var: Vec<f64> = var
                    .iter()
                    .zip(&px.var)
                    .zip(&dx.var)
                    .map(|((v, pv), dv)| if *dv > 0.0 { v * pv / dv } else { *v })
                    .collect();
                set(&mut out, node.layer, "running_mean", &corrected_mean);
                set(&mut out, node.layer, "running_var", &corrected_var);
                // After the correction both networks' batch norms see inputs of the
                // statistics they normalise with: both outputs have the affine moments.
                let (gamma, beta) = (tensor(dense, node.layer, "weight"), tensor(dense, node.layer, "bias"));
                let normalised = |x: &Moments, mean: &[f64], var: &[f64]| Moments {
                    mean: (0..gamma.len())
                        .map(|c| gamma[c] * (x.mean[c] - mean[c]) / (var[c] + eps).sqrt() + beta[c])
                        .collect(),
                    var: (0..gamma.len()).map(|c| gamma[c] * gamma[c] * x.var[c] / (var[c] + eps)).collect(),
                };
                let (pg, pb) = (tensor(pruned, node.layer, "weight"), tensor(pruned, node.layer, "bias"));
                let pruned_out = Moments {
                    mean: (0..pg.len())
                        .map(|c| pg[c] * (px.mean[c] - corrected_mean[c]) / (corrected_var[c] + eps).sqrt() + pb[c])
                        .collect(),
                    var: (0..pg.len()).map(|c| pg[c] * pg[c] * px.var[c] / (corrected_var[c] + eps)).collect(),
                };
                (normalised(&dx, &mean, &var), pruned_out)
            }
            LayerSpec::Relu => (relu(&read(&d, 0)), relu(&read(&p, 0))),
            LayerSpec::Add => {
                let sum = |all: &[Moments]| {
                    let parts: Vec<Moments> = (0..node.inputs.len()).map(|k| read(all, k)).collect();
                    Moments {
                        mean: (0..parts[0].mean.len()).map(|c| parts.iter().map(|m| m.mean[c]).sum()).collect(),
                        var: (0..parts[0].var.len()).map(|c| parts.iter().map(|m| m.var[c]).sum()).collect(),
                    }
                };
                (sum(&d), sum(&p))
            }
            LayerSpec::Flatten => {
                let spread = |m: Moments| match node.input {
                    FeatureShape::Map { h, w, .. } => Moments {
                        mean: m.mean.iter().flat_map(|&x| std::iter::repeat_n(x, h * w)).collect(),
                        var: m.var.iter().flat_map(|&x| std::iter::repeat_n(x, h * w)).collect(),
                    },
                    FeatureShape::Flat(_) => m,
                };
                (spread(read(&d, 0)), spread(read(&p, 0)))
            }
            // Pooling and dropout (the identity outside training) keep each channel's
            // moments; other activations are taken to (the approximation the module
            // documentation states).
            LayerSpec::MaxPool { .. }
            | LayerSpec::AvgPool { .. }
            | LayerSpec::GlobalAvgPool
            | LayerSpec::Dropout { .. }
            | LayerSpec::Tanh
            | LayerSpec::Gelu
            | LayerSpec::Sigmoid => (read(&d, 0), read(&p, 0)),
        };
        d.push(dm);
        p.push(pm);
    }
    Ok(out)
}

/// The network input's per-channel moments: solved from the first batch normalisation that
/// directly follows the first conv reading the input, else mean 0 and variance 1.
fn input_moments(dense: &Model, graph: &Graph) -> Moments {
    let spec = dense.spec();
    let [channels, ..] = spec.input;
    let fallback = Moments::uniform(channels, 0.0, 1.0);
    let stem = graph
        .nodes
        .iter()
        .find(|n| n.inputs == [Source::Network] && matches!(spec.layers[n.layer], LayerSpec::Conv2d { .. }));
    let Some(stem) = stem else { return fallback };
    let bn = graph.nodes.iter().find(|n| {
        n.inputs == [Source::Node(stem.layer)] && matches!(spec.layers[n.layer], LayerSpec::BatchNorm2d { .. })
    });
    let Some(bn) = bn else { return fallback };
    let (sums, squares) = unit_sums(dense, stem.layer);
    let bias = param(dense, stem.layer, ParamRole::Bias);
    let mean_target: Vec<f64> = tensor(dense, bn.layer, "running_mean")
        .iter()
        .enumerate()
        .map(|(o, m)| m - bias.as_ref().map_or(0.0, |b| b[o]))
        .collect();
    let var_target = tensor(dense, bn.layer, "running_var");
    let mean = least_squares(&sums, &mean_target, channels);
    let var = least_squares(&squares, &var_target, channels).into_iter().map(|v| v.max(1e-6)).collect();
    match mean.iter().chain(&var).all(|x: &f64| x.is_finite()) {
        true => Moments { mean, var },
        false => fallback,
    }
}

/// Solves `a · x ≈ b` (`a` is `rows × n`, row-major) by the normal equations, with a small
/// ridge so that a rank-deficient `a` still gives an answer.
fn least_squares(a: &[Vec<f64>], b: &[f64], n: usize) -> Vec<f64> {
    let mut ata = vec![0.0; n * n];
    let mut atb = vec![0.0; n];
    for (row, &y) in a.iter().zip(b) {
        for i in 0..n {
            atb[i] += row[i] * y;
            for j in 0..n {
                ata[i * n + j] += row[i] * row[j];
            }
        }
    }
    let scale = (0..n).map(|i| ata[i * n + i]).fold(0.0, f64::max).max(1e-12);
    for i in 0..n {
        ata[i * n + i] += 1e-9 * scale;
    }
    // Gaussian elimination with partial pivoting; n is the input's channel count (1 or 3).
    let mut x = atb;
    for col in 0..n {
        let pivot = (col..n).max_by(|&r, &s| ata[r * n + col].abs().total_cmp(&ata[s * n + col].abs())).unwrap_or(col);
        for k in 0..n {
            ata.swap(col * n + k, pivot * n + k);
        }
        x.swap(col, pivot);
        let d = ata[col * n + col];
        if d.abs() < 1e-300 {
            continue;
        }
        for r in 0..n {
            if r != col {
                let f = ata[r * n + col] / d;
                for k in 0..n {
                    ata[r * n + k] -= f * ata[col * n + k];
                }
                x[r] -= f * x[col];
            }
        }
    }
    (0..n).map(|i| x[i] / ata[i * n + i]).collect()
}

/// For each output unit `o` of layer `layer` and input channel `i`: `Σ_k w_oik` and
/// `Σ_k w_oik²` (k over kernel positions, or over a flattened input's positions).
fn unit_sums(model: &Model, layer: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (p, w) =
        model.params().iter().zip(model.values()).find(|(p, _)| p.layer == layer && p.prunable).expect("a weight");
    // `[out, in, kh, kw]` or `[out, in]`: `in` channels (or features), `per` weights each.
    let (outs, channels) = (p.shape[0], p.shape[1]);
    let row = w.len() / outs;
    let per = row / channels.max(1);
    let mut sums = vec![vec![0.0; channels]; outs];
    let mut squares = vec![vec![0.0; channels]; outs];
    for o in 0..outs {
        for (j, &x) in w[o * row..(o + 1) * row].iter().enumerate() {
            let i = (j / per.max(1)).min(channels - 1);
            sums[o][i] += x as f64;
            squares[o][i] += (x as f64) * (x as f64);
        }
    }
    (sums, squares)
}

/// The output moments of conv or linear `layer` for input moments `x` (one entry per input
/// channel or feature).
fn affine(model: &Model, layer: usize, x: &Moments) -> Moments {
    let (sums, squares) = unit_sums(model, layer);
    let bias = param(model, layer, ParamRole::Bias);
    let dot = |w: &[f64], v: &[f64]| w.iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
    Moments {
        mean: sums.iter().enumerate().map(|(o, s)| dot(s, &x.mean) + bias.as_ref().map_or(0.0, |b| b[o])).collect(),
        var: squares.iter().map(|s| dot(s, &x.var)).collect(),
    }
}

/// The moments of `max(0, x)` for Gaussian `x` of the given moments, per channel.
fn relu(x: &Moments) -> Moments {
    let (mut mean, mut var) = (Vec::with_capacity(x.mean.len()), Vec::with_capacity(x.var.len()));
    for (&mu, &v) in x.mean.iter().zip(&x.var) {
        let sigma = v.max(0.0).sqrt();
        if sigma < 1e-12 {
            mean.push(mu.max(0.0));
            var.push(0.0);
            continue;
        }
        let a = mu / sigma;
        let (pdf, cdf) = ((-0.5 * a * a).exp() / (2.0 * std::f64::consts::PI).sqrt(), normal_cdf(a));
        let m = mu * cdf + sigma * pdf;
        let second = (mu * mu + v) * cdf + mu * sigma * pdf;
        mean.push(m);
        var.push((second - m * m).max(0.0));
    }
    Moments { mean, var }
}

/// Φ(a), from the complementary error function (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7).
fn normal_cdf(a: f64) -> f64 {
    let x = a.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if a >= 0.0 { 1.0 - 0.5 * erfc } else { 0.5 * erfc }
}

fn param(model: &Model, layer: usize, role: ParamRole) -> Option<Vec<f64>> {
    model
        .params()
        .iter()
        .zip(model.values())
        .find(|(p, _)| p.layer == layer && p.role == role)
        .map(|(_, v)| v.iter().map(|&x| x as f64).collect())
}

fn tensor(model: &Model, layer: usize, suffix: &str) -> Vec<f64> {
    model
        .params()
        .iter()
        .zip(model.values())
        .find(|(p, _)| p.layer == layer && p.name.ends_with(&format!(".{suffix}")))
        .map(|(_, v)| v.iter().map(|&x| x as f64).collect())
        .expect("a batch norm owns its four tensors")
}

fn set(model: &mut Model, layer: usize, suffix: &str, values: &[f64]) {
    let index = model
        .params()
        .iter()
        .position(|p| p.layer == layer && p.name.ends_with(&format!(".{suffix}")))
        .expect("a batch norm owns its four tensors");
    model.values_mut()[index] = values.iter().map(|&x| x as f32).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;

    /// conv (1 → 2 channels, 1×1, no bias) → batchnorm → relu → global pool → flatten → linear.
    fn model(weights: [f32; 2], running_mean: [f32; 2], running_var: [f32; 2]) -> Model {
        let spec = ArchSpec::from_json(
            r#"{"name": "t", "input": [1, 2, 2], "classes": 2, "layers": [
            {"type": "conv2d", "name": "conv", "out_channels": 2, "kernel": 1, "bias": false},
            {"type": "batchnorm2d", "name": "bn"}, {"type": "relu"}, {"type": "global_avgpool"},
            {"type": "flatten"}, {"type": "linear", "name": "fc", "out_features": 2}]}"#,
        )
        .unwrap();
        let values = vec![
            weights.to_vec(),
            vec![1.0, 1.0],
            vec![0.0, 0.0],
            running_mean.to_vec(),
            running_var.to_vec(),
            vec![1.0; 4],
            vec![0.0; 2],
        ];
        Model::new(spec, values).unwrap()
    }

    #[test]
    fn the_normal_cdf_and_rectified_moments_match_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.0) - 0.841_344_746).abs() < 2e-7);
        assert!((normal_cdf(-2.0) - 0.022_750_132).abs() < 2e-7);
        // Standard normal: E[relu] = 1/√(2π) ≈ 0.398942, Var = 1/2 − 1/(2π) ≈ 0.340845.
        let m = relu(&Moments { mean: vec![0.0], var: vec![1.0] });
        assert!((m.mean[0] - 0.398_942_3).abs() < 1e-6 && (m.var[0] - 0.340_845_4).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn the_input_moments_are_solved_from_the_first_batch_norm() {
        // Input mean m, variance v: bn sees means 2m, -m and variances 4v, v. With m = 0.5,
        // v = 0.25 the dense statistics are [1, -0.5] and [1, 0.25].
        let dense = model([2.0, -1.0], [1.0, -0.5], [1.0, 0.25]);
        let x = input_moments(&dense, &dense.spec().graph().unwrap());
        assert!((x.mean[0] - 0.5).abs() < 1e-6 && (x.var[0] - 0.25).abs() < 1e-6, "{x:?}");
    }

    #[test]
    fn pruning_a_unit_away_rescales_its_statistics_and_leaves_the_others() {
        // Halving channel 0's weight (a stand-in for pruning part of a unit) quarters its
        // variance and halves its mean; channel 1 is untouched, so are its statistics.
        let dense = model([2.0, -1.0], [1.0, -0.5], [1.0, 0.25]);
        let mut pruned = dense.clone();
        pruned.values_mut()[0] = vec![1.0, -1.0];
        let fixed = correct_batchnorm(&dense, &pruned).unwrap();
        let stats = |m: &Model, i: usize| m.values()[i].clone();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(&stats(&fixed, 3), &[0.5, -0.5]), "{:?}", stats(&fixed, 3));
        assert!(close(&stats(&fixed, 4), &[0.25, 0.25]), "{:?}", stats(&fixed, 4));
        // Nothing else changes, and an unpruned model is its own correction.
        assert_eq!(stats(&fixed, 0), vec![1.0, -1.0]);
        assert_eq!(correct_batchnorm(&dense, &dense).unwrap(), dense);
    }

    #[test]
    fn a_sequential_model_without_batch_norm_is_returned_as_it_is() {
        let spec = crate::preset("cnn-digits").unwrap();
        let dense = crate::engine::init_model(&spec, crate::engine::Init::Uniform, 1).unwrap();
        let mut pruned = dense.clone();
        pruned.values_mut()[0].iter_mut().step_by(2).for_each(|w| *w = 0.0);
        assert_eq!(correct_batchnorm(&dense, &pruned).unwrap(), pruned);
    }
}

//! A naive f64 implementation of the forward pass, image by image in PyTorch's layout,
//! written straight from the layer definitions: the reference the engine is tested against
//! (logits, finite-difference gradients, unfolded layer inputs).

use hyperprune_core::arch::{Activation, ArchSpec, LayerSpec};
use hyperprune_core::dataset::Samples;

/// Tensors in [`ArchSpec::params`] order, as f64.
pub(crate) type Params = Vec<Vec<f64>>;

/// The model's parameters as f64.
pub(crate) fn params_of(model: &hyperprune_core::Model) -> Params {
    model.values().iter().map(|v| v.iter().map(|&x| x as f64).collect()).collect()
}

/// The input of every layer and the logits (`result[l]` feeds layer `l`; the last entry is
/// the logits), for one image, in C, H, W order; dropout is the identity.
pub(crate) fn activations(spec: &ArchSpec, params: &Params, image: &[f32]) -> Vec<Vec<f64>> {
    let shapes = spec.input_shapes().unwrap();
    let mut tensor = 0;
    let mut x: Vec<f64> = image.iter().map(|&v| v as f64).collect();
    let mut all = vec![x.clone()];
    for (layer, shape) in spec.layers.iter().zip(shapes) {
        let (c, h, w) = match shape {
            hyperprune_core::arch::FeatureShape::Map { c, h, w } => (c, h, w),
            hyperprune_core::arch::FeatureShape::Flat(f) => (f, 1, 1),
        };
        x = match layer {
            LayerSpec::Conv2d { out_channels, kernel: k, stride: s, padding: p, bias, .. } => {
                let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
                let wt = &params[tensor];
                let b = if *bias { Some(&params[tensor + 1]) } else { None };
                tensor += 1 + usize::from(*bias);
                let mut y = vec![0.0; out_channels * oh * ow];
                for co in 0..*out_channels {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut sum = b.map_or(0.0, |b| b[co]);
                            for ci in 0..c {
                                for ky in 0..*k {
                                    for kx in 0..*k {
                                        let iy = (oy * s + ky) as isize - *p as isize;
                                        let ix = (ox * s + kx) as isize - *p as isize;
                                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                            sum += wt[((co * c + ci) * k + ky) * k + kx]
                                                * x[(ci * h + iy as usize) * w + ix as usize];
                                        }
                                    }
                                }
                            }
                            y[(co * oh + oy) * ow + ox] = sum;
                        }
                    }
                }
                y
            }
            LayerSpec::Linear { out_features, bias, .. } => {
                let wt = &params[tensor];
                let b = if *bias { Some(&params[tensor + 1]) } else { None };
                tensor += 1 + usize::from(*bias);
                (0..*out_features)
                    .map(|o| b.map_or(0.0, |b| b[o]) + (0..x.len()).map(|i| wt[o * x.len() + i] * x[i]).sum::<f64>())
                    .collect()
            }
            LayerSpec::MaxPool { kernel: k, stride } | LayerSpec::AvgPool { kernel: k, stride } => {
                let s = stride.unwrap_or(*k);
                let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
                let max = matches!(layer, LayerSpec::MaxPool { .. });
                let mut y = vec![0.0; c * oh * ow];
                for ci in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let window = (0..k * k).map(|j| x[(ci * h + oy * s + j / k) * w + ox * s + j % k]);
                            y[(ci * oh + oy) * ow + ox] = if max {
                                window.fold(f64::NEG_INFINITY, f64::max)
                            } else {
                                window.sum::<f64>() / (k * k) as f64
                            };
                        }
                    }
                }
                y
            }
            LayerSpec::Flatten | LayerSpec::Dropout { .. } => x,
            LayerSpec::BatchNorm2d { .. } | LayerSpec::Add | LayerSpec::GlobalAvgPool => {
                panic!("the reference runs sequential networks; '{}' is a graph", spec.name)
            }
            LayerSpec::Relu | LayerSpec::Tanh | LayerSpec::Gelu | LayerSpec::Sigmoid => {
                let a = layer.activation().unwrap();
                x.iter()
                    .map(|&v| match a {
                        Activation::Relu => v.max(0.0),
                        Activation::Tanh => v.tanh(),
                        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                        Activation::Gelu => super::activation::gelu(v),
                    })
                    .collect()
            }
            other => panic!("the reference has no rule for {}", other.type_name()),
        };
        all.push(x.clone());
    }
    all
}

/// The logits of one image.
pub(crate) fn logits(spec: &ArchSpec, params: &Params, image: &[f32]) -> Vec<f64> {
    activations(spec, params, image).pop().unwrap()
}

/// Mean cross-entropy over `samples[range]`.
pub(crate) fn mean_loss(spec: &ArchSpec, params: &Params, samples: &Samples, range: std::ops::Range<usize>) -> f64 {
    let n = range.len() as f64;
    range
        .map(|i| {
            let z = logits(spec, params, samples.image(i));
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - z[samples.labels[i] as usize]
        })
        .sum::<f64>()
        / n
}

/// Mean over `samples[range]` of `T² · KL(softmax(z/T) ‖ softmax(z_s/T))`, `z` the logits
/// under `teacher` and `z_s` those under `student`.
pub(crate) fn mean_distillation(
    spec: &ArchSpec,
    teacher: &Params,
    student: &Params,
    samples: &Samples,
    range: std::ops::Range<usize>,
    temperature: f64,
) -> f64 {
    let log_softmax = |params: &Params, image: &[f32]| {
        let z: Vec<f64> = logits(spec, params, image).iter().map(|v| v / temperature).collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        z.into_iter().map(move |v| v - lse)
    };
    let n = range.len() as f64;
    range
        .map(|i| {
            let log_q: Vec<f64> = log_softmax(student, samples.image(i)).collect();
            let kl: f64 = log_softmax(teacher, samples.image(i)).zip(log_q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum();
            temperature * temperature * kl
        })
        .sum::<f64>()
        / n
}

/// The unfolded input rows of dense layer `layer` for one image: one row `[in, kh, kw]`
/// per output position (a linear layer has one row: its input).
pub(crate) fn unfolded_rows(spec: &ArchSpec, params: &Params, image: &[f32], layer: usize) -> Vec<Vec<f64>> {
    let x = &activations(spec, params, image)[layer];
    let shape = spec.input_shapes().unwrap()[layer];
    match (&spec.layers[layer], shape) {
        (
            LayerSpec::Conv2d { kernel: k, stride: s, padding: p, .. },
            hyperprune_core::arch::FeatureShape::Map { c, h, w },
        ) => {
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let mut rows = Vec::new();
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut row = Vec::with_capacity(c * k * k);
                    for ci in 0..c {
                        for ky in 0..*k {
                            for kx in 0..*k {
                                let iy = (oy * s + ky) as isize - *p as isize;
                                let ix = (ox * s + kx) as isize - *p as isize;
                                let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                row.push(if inside { x[(ci * h + iy as usize) * w + ix as usize] } else { 0.0 });
                            }
                        }
                    }
                    rows.push(row);
                }
            }
            rows
        }
        _ => vec![x.clone()],
    }
}

/// A network that uses every layer type and option: strided, padded and bias-free
/// convolutions, overlapping max pooling, average pooling, dropout and all activations.
pub(crate) fn tiny_spec() -> ArchSpec {
    ArchSpec::from_json(
        r#"{"name": "tiny", "input": [2, 9, 9], "classes": 3, "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel": 3, "stride": 2, "padding": 1},
            {"type": "relu"},
            {"type": "maxpool", "kernel": 3, "stride": 1},
            {"type": "conv2d", "out_channels": 3, "kernel": 2, "padding": 1, "bias": false},
            {"type": "tanh"},
            {"type": "avgpool", "kernel": 2},
            {"type": "flatten"},
            {"type": "dropout", "p": 0.3},
            {"type": "linear", "out_features": 6},
            {"type": "gelu"},
            {"type": "linear", "out_features": 5, "bias": false},
            {"type": "sigmoid"},
            {"type": "linear", "out_features": 3}
        ]}"#,
    )
    .unwrap()
}

/// A Kaiming-uniform model whose biases are random too (zero biases would leave their
/// gradients and the bias kernels untested), and whose batch norms are away from the
/// identity: scales in 0.5..1.5, shifts in ±0.2, running means in ±0.5 and running
/// variances in 0.5..2 (positive, as a variance must be), so that eval mode is a
/// non-trivial affine map that keeps activations O(1).
pub(crate) fn random_model(spec: &ArchSpec, seed: u64) -> hyperprune_core::Model {
    use hyperprune_core::arch::ParamRole;
    use rand::{Rng, SeedableRng};
    let mut model =
        hyperprune_core::engine::init_model(spec, hyperprune_core::engine::Init::KaimingUniform, seed).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1000);
    let roles: Vec<ParamRole> = model.params().iter().map(|p| p.role).collect();
    for (v, role) in model.values_mut().iter_mut().zip(roles) {
        let range = match role {
            ParamRole::Weight => continue,
            ParamRole::Bias | ParamRole::Shift => -0.2..0.2,
            ParamRole::Scale => 0.5..1.5,
            ParamRole::RunningMean => -0.5..0.5,
            ParamRole::RunningVar => 0.5..2.0,
        };
        v.iter_mut().for_each(|b| *b = rng.random_range(range.clone()));
    }
    model
}

//! Logits and evaluation: forward passes only, fanned out over chunks of images.
//!
//! [`evaluate`] runs all models of one spec on a chunk before moving to the next chunk, so
//! the work that depends on the images alone (gathering, unfolding them for the first
//! convolution) is done once per chunk for all of them.

use super::parallel;
use super::pass::{self, Workspace};
use super::plan::Plan;
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::{EngineError, Evaluation};
use hyperprune_core::model::Model;

/// Most images per forward pass: inference keeps no gradients, but the working set should
/// still stay near the cache size.
const MAX_CHUNK: usize = 64;

/// Logits `[n, classes]` (row-major) of `model` on `samples`.
///
/// # Errors
/// [`EngineError::Mismatch`] when the samples do not fit the network.
pub(crate) fn logits(threads: usize, model: &Model, samples: &Samples) -> Result<Vec<f32>, EngineError> {
    let plan = Plan::new(model.spec())?;
    plan.check_samples(samples)?;
    let params = plan.flatten(model.values());
    let chunk = pass::chunk_images(&plan, MAX_CHUNK);
    let classes = plan.classes();
    let mut outputs: Vec<Vec<f32>> = vec![Vec::new(); samples.len().div_ceil(chunk)];
    let mut workspaces: Vec<Workspace> = (0..threads).map(|_| Workspace::default()).collect();
    parallel::for_each(&mut outputs, &mut workspaces, |c, out, ws| {
        let range = c * chunk..((c + 1) * chunk).min(samples.len());
        let n = range.len();
        pass::forward(&plan, &params, range.map(|i| samples.image(i)), plan.layers.len(), false, None, ws);
        let z = ws.logits(&plan);
        out.resize(n * classes, 0.0);
        for i in 0..n {
            for k in 0..classes {
                out[i * classes + k] = z[k * n + i];
            }
        }
    });
    Ok(outputs.concat())
}

/// Accuracy and mean cross-entropy of every model on `samples`, in model order.
///
/// # Errors
/// [`EngineError::Mismatch`] for no samples, or samples that do not fit a network.
pub(crate) fn evaluate(threads: usize, models: &[&Model], samples: &Samples) -> Result<Vec<Evaluation>, EngineError> {
    if samples.is_empty() {
        return Err(EngineError::Mismatch("evaluation needs at least one sample, none given".into()));
    }
    let mut groups: Vec<(Plan, Vec<usize>)> = Vec::new();
    for (i, model) in models.iter().enumerate() {
        match groups.iter_mut().find(|(p, _)| &p.spec == model.spec()) {
            Some((_, members)) => members.push(i),
            None => {
                let plan = Plan::new(model.spec())?;
                plan.check_samples(samples)?;
                groups.push((plan, vec![i]));
            }
        }
    }
    let mut results = vec![Evaluation { accuracy: 0.0, loss: 0.0, samples: samples.len() }; models.len()];
    let mut workspaces: Vec<Workspace> = (0..threads).map(|_| Workspace::default()).collect();
    for (plan, members) in &groups {
        let params: Vec<Vec<f32>> = members.iter().map(|&m| plan.flatten(models[m].values())).collect();
        let shared = pass::prefix_is_shared(plan);
        let chunk = pass::chunk_images(plan, MAX_CHUNK);
        // Per chunk: (summed loss, correct) of every member.
        let mut outputs: Vec<Vec<(f64, usize)>> = vec![Vec::new(); samples.len().div_ceil(chunk)];
        parallel::for_each(&mut outputs, &mut workspaces, |c, out, ws| {
            let range = c * chunk..((c + 1) * chunk).min(samples.len());
            for (slot, p) in params.iter().enumerate() {
                let images = range.clone().map(|i| samples.image(i));
                pass::forward(plan, p, images, plan.layers.len(), slot > 0 && shared, None, ws);
                out.push(ws.cross_entropy(plan, &samples.labels[range.clone()], None));
            }
        });
        for (slot, &m) in members.iter().enumerate() {
            let (loss, correct) = outputs.iter().fold((0.0, 0), |(l, c), o| (l + o[slot].0, c + o[slot].1));
            let n = samples.len() as f64;
            results[m] = Evaluation { accuracy: correct as f64 / n, loss: loss / n, samples: samples.len() };
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self, random_model, tiny_spec};
    use crate::synthetic::random_samples;

    /// Largest |engine − reference| over the largest |reference| logit.
    fn relative_error(spec: &hyperprune_core::ArchSpec, model: &Model, samples: &Samples, threads: usize) -> f64 {
        let got = logits(threads, model, samples).unwrap();
        let params = reference::params_of(model);
        let (mut err, mut scale) = (0f64, 0f64);
        for i in 0..samples.len() {
            let want = reference::logits(spec, &params, samples.image(i));
            for (k, w) in want.iter().enumerate() {
                err = err.max((got[i * spec.classes + k] as f64 - w).abs());
                scale = scale.max(w.abs());
            }
        }
        err / scale
    }

    #[test]
    fn logits_match_the_naive_reference_on_every_preset_and_the_tiny_net() {
        // 70 images: several chunks, the last one partial.
        for name in ["cnn-s", "cnn-digits", "lenet5", "mlpnet"] {
            let spec = hyperprune_core::preset(name).unwrap();
            let samples = random_samples(spec.input, 70, spec.classes, 3);
            let model = random_model(&spec, 7);
            // f32 sums of up to 400 products and the fast tanh (3e-7) stay far below 1e-4.
            let err = relative_error(&spec, &model, &samples, 2);
            assert!(err < 1e-4, "{name}: relative error {err}");
        }
        let spec = tiny_spec();
        let samples = random_samples(spec.input, 9, 3, 4);
        let err = relative_error(&spec, &random_model(&spec, 2), &samples, 1);
        assert!(err < 1e-4, "tiny: relative error {err}");
    }

    #[test]
    fn evaluation_of_several_models_matches_their_logits() {
        let spec = hyperprune_core::preset("cnn-digits").unwrap();
        let samples = random_samples(spec.input, 150, 10, 5);
        let models: Vec<Model> = (0..3).map(|s| random_model(&spec, s)).collect();
        let mlp = random_model(&hyperprune_core::preset("mlpnet").unwrap(), 1);
        let mlp_samples = random_samples([1, 28, 28], 10, 10, 5);
        let refs: Vec<&Model> = models.iter().collect();
        let together = evaluate(2, &refs, &samples).unwrap();
        for (m, e) in models.iter().zip(&together) {
            let z = logits(1, m, &samples).unwrap();
            let (mut correct, mut loss) = (0, 0.0);
            for (row, &label) in z.chunks(10).zip(&samples.labels) {
                let best = (0..10).fold(0, |b, k| if row[k] > row[b] { k } else { b });
                correct += usize::from(best == label as usize);
                let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
                loss +=
                    max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() - row[label as usize] as f64;
            }
            assert_eq!(e.accuracy, correct as f64 / 150.0);
            assert!((e.loss - loss / 150.0).abs() < 1e-6, "{} {}", e.loss, loss / 150.0);
            // Alone, with the image prefix not shared, it is the same bit for bit.
            assert_eq!(evaluate(1, &[m], &samples).unwrap()[0], *e);
        }
        let err = evaluate(1, &[&models[0], &mlp], &mlp_samples).unwrap_err().to_string();
        assert!(err.contains("expects [1, 8, 8]"), "{err}");
        assert!(evaluate(1, &refs, &samples.head(0)).is_err());
    }
}

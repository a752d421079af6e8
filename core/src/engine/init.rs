//! Seeded weight initialisation, shared by every engine so that equal seeds give equal
//! starting points whichever engine trains.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Init;
use crate::arch::{ArchError, ArchSpec, ParamRole};
use crate::model::Model;

/// A model with freshly initialised weights, deterministic in `seed`.
///
/// Fan-in is `in` for linear and `in·kh·kw` for conv weights, as in PyTorch. Every other
/// tensor takes PyTorch's starting value for its role: biases and batch norm shifts 0,
/// batch norm scales 1, running means 0 and running variances 1. Only weights draw from
/// the generator, so adding a batch norm layer does not move the other layers' draws.
///
/// # Errors
/// [`ArchError`] when the spec is invalid.
pub fn init_model(spec: &ArchSpec, init: Init, seed: u64) -> Result<Model, ArchError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = spec.params()?;
    let values = params
        .iter()
        .map(|p| {
            match p.role {
                ParamRole::Weight => {}
                ParamRole::Bias | ParamRole::Shift => return vec![0.0; p.numel()],
                ParamRole::Scale => return vec![1.0; p.numel()],
                ParamRole::RunningVar => return vec![1.0; p.numel()],
                ParamRole::RunningMean => return vec![0.0; p.numel()],
            }
            let fan_in = p.numel() / p.shape[0];
            let f = fan_in as f32;
            (0..p.numel())
                .map(|_| match init {
                    Init::Uniform => uniform(&mut rng, 1.0 / f.sqrt()),
                    Init::KaimingUniform => uniform(&mut rng, (6.0 / f).sqrt()),
                    Init::Normal => normal(&mut rng) * (1.0 / f).sqrt(),
                    Init::KaimingNormal => normal(&mut rng) * (2.0 / f).sqrt(),
                })
                .collect()
        })
        .collect();
    Model::new(spec.clone(), values)
}

fn uniform(rng: &mut ChaCha8Rng, a: f32) -> f32 {
    rng.random_range(-a..a)
}

/// A standard normal draw (Box–Muller; one of the pair is discarded for simplicity).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_scaled() {
        let spec = crate::preset("lenet5").unwrap();
        let a = init_model(&spec, Init::KaimingNormal, 3).unwrap();
        assert_eq!(a, init_model(&spec, Init::KaimingNormal, 3).unwrap());
        assert_ne!(a, init_model(&spec, Init::KaimingNormal, 4).unwrap());
        // fc 400->120 weight: std should be sqrt(2/400) = 0.0707; 48k draws give ~0.3% error.
        let w = a.tensor("7.weight").unwrap();
        let std = (w.iter().map(|x| (x * x) as f64).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std - 0.0707).abs() < 0.003, "{std}");
        let u = init_model(&spec, Init::Uniform, 3).unwrap();
        let bound = 1.0 / 400f32.sqrt();
        assert!(u.tensor("7.weight").unwrap().iter().all(|x| x.abs() <= bound));
        assert!(u.tensor("7.bias").unwrap().iter().all(|&x| x == 0.0));
    }

    #[test]
    fn batch_norm_starts_as_pytorch_identity_and_weights_are_drawn() {
        let spec = crate::preset("resnet-s").unwrap();
        let model = init_model(&spec, Init::KaimingNormal, 1).unwrap();
        for (prefix, c) in [("bn1", 8), ("layer2.0.bn2", 16), ("layer3.0.downsample.1", 32)] {
            let at = |suffix: &str| model.tensor(&format!("{prefix}.{suffix}")).unwrap().to_vec();
            assert_eq!(at("weight"), vec![1.0; c], "{prefix}");
            assert_eq!(at("bias"), vec![0.0; c], "{prefix}");
            assert_eq!(at("running_mean"), vec![0.0; c], "{prefix}");
            assert_eq!(at("running_var"), vec![1.0; c], "{prefix}");
        }
        assert!(model.tensor("layer1.0.conv1.weight").unwrap().iter().any(|&x| x != 0.0));
        assert!(model.tensor("fc.bias").unwrap().iter().all(|&x| x == 0.0));
    }
}

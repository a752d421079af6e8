//! Seeded weight initialisation, shared by every engine so that equal seeds give equal
//! starting points whichever engine trains.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Init;
use crate::arch::{ArchError, ArchSpec};
use crate::model::Model;

/// A model with freshly initialised weights (biases zero), deterministic in `seed`.
///
/// Fan-in is `in` for linear and `in·kh·kw` for conv weights, as in PyTorch.
///
/// # Errors
/// [`ArchError`] when the spec is invalid.
pub fn init_model(spec: &ArchSpec, init: Init, seed: u64) -> Result<Model, ArchError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values = spec
        .params()?
        .iter()
        .map(|p| {
            if !p.prunable {
                return vec![0.0; p.numel()];
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
}

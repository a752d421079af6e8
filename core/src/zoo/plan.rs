//! Sampling member hyperparameters and the member split, deterministically from the zoo
//! seed.
//!
//! Ranges (after the Model Zoos grids of Schürholt et al., 2022):
//!
//! | factor | when varied | otherwise |
//! |---|---|---|
//! | `activation` | uniform over relu, tanh, gelu, sigmoid | the architecture's own |
//! | `init` | uniform over uniform, normal, kaiming-uniform, kaiming-normal | uniform (PyTorch's default) |
//! | `lr` | log-uniform in [lr/10, lr] | lr |
//! | `weight-decay` | uniform over {0, 1e-4, 1e-3} | 0 |
//! | `dropout` | uniform over {0, 0.5} | 0 |
//! | `seed` | a distinct initialisation seed per member | the zoo seed for every member |
//!
//! The mini-batch order and dropout masks come from the member's seed, or from the zoo seed
//! for every member when `shared_data_order` is set.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ZooError;
use super::memory::{available_memory, plan_memory};
use super::meta::{Hyperparams, MemberInfo, Split, ZOO_FORMAT, ZooMeta, ZooSettings};
use crate::arch::{Activation, ArchSpec};
use crate::engine::Init;

/// The factors `--vary` accepts.
pub const VARY_FACTORS: [&str; 6] = ["seed", "lr", "activation", "init", "weight-decay", "dropout"];

const INITS: [Init; 4] = [Init::Uniform, Init::Normal, Init::KaimingUniform, Init::KaimingNormal];

/// Plans a zoo of `members` members: hyperparameters, per-member architectures and split.
///
/// # Errors
/// [`ZooError::Settings`] for an unknown `vary` factor, split fractions that do not sum to
/// 1, zero members, or a zero batch size.
pub fn plan(
    name: &str,
    arch: &ArchSpec,
    dataset: &str,
    engine: &str,
    settings: ZooSettings,
    members: usize,
) -> Result<ZooMeta, ZooError> {
    for v in &settings.vary {
        if !VARY_FACTORS.contains(&v.as_str()) {
            return Err(ZooError::Settings(format!("cannot vary '{v}': expected some of {}", VARY_FACTORS.join(", "))));
        }
    }
    if members == 0 {
        return Err(ZooError::Settings("a zoo needs at least one member".into()));
    }
    settings.check().map_err(ZooError::Settings)?;
    // One record per member, each with its own architecture: a count far beyond the
    // machine's memory is refused here instead of aborting in the allocator.
    let needed = plan_memory(arch, members);
    if let Some(available) = available_memory().filter(|a| needed > *a) {
        return Err(ZooError::Settings(format!(
            "{members} members need about {:.1} GiB for their records alone, but {:.1} GiB is available; plan fewer \
             members (--members)",
            super::memory::gib(needed),
            super::memory::gib(available)
        )));
    }
    let varies = |f: &str| settings.vary.iter().any(|v| v == f);
    let own_activation = arch.layers.iter().find_map(|l| l.activation()).unwrap_or(Activation::Tanh);
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let splits = split_members(members, settings.split, &mut rng);
    let mut list = Vec::with_capacity(members);
    for (i, split) in splits.into_iter().enumerate() {
        let hp = Hyperparams {
            activation: if varies("activation") { Activation::ALL[rng.random_range(0..4)] } else { own_activation },
            init: if varies("init") { INITS[rng.random_range(0..4)] } else { Init::Uniform },
            lr: if varies("lr") { settings.lr * 10f32.powf(-rng.random::<f32>()) } else { settings.lr },
            weight_decay: if varies("weight-decay") { [0.0, 1e-4, 1e-3][rng.random_range(0..3)] } else { 0.0 },
            dropout: if varies("dropout") { [0.0, 0.5][rng.random_range(0..2)] } else { 0.0 },
            seed: if varies("seed") { rng.random() } else { settings.seed },
            data_seed: settings.seed,
        };
        let data_seed = if settings.shared_data_order { settings.seed } else { hp.seed };
        let hp = Hyperparams { data_seed, ..hp };
        let member_arch = arch.with_activation(hp.activation).with_dropout(hp.dropout);
        let id = format!("{i:04}");
        list.push(MemberInfo {
            file: format!("members/{id}.safetensors"),
            id,
            split,
            hyperparams: hp,
            arch: member_arch,
            train_accuracy: None,
            test_accuracy: None,
            test_loss: None,
        });
    }
    Ok(ZooMeta {
        format: ZOO_FORMAT,
        name: name.to_string(),
        arch: arch.clone(),
        dataset: dataset.to_string(),
        engine: engine.to_string(),
        settings,
        members: list,
    })
}

/// Assigns members to train / val / test by a seeded shuffle; counts are rounded so the
/// test split gets the remainder.
fn split_members(n: usize, fractions: [f64; 3], rng: &mut ChaCha8Rng) -> Vec<Split> {
    let train = (fractions[0] * n as f64).round() as usize;
    let val = ((fractions[1] * n as f64).round() as usize).min(n - train.min(n));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut splits = vec![Split::Test; n];
    for (rank, &member) in order.iter().enumerate() {
        splits[member] = if rank < train {
            Split::Train
        } else if rank < train + val {
            Split::Val
        } else {
            Split::Test
        };
    }
    splits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Optimizer;

    fn settings(vary: &[&str]) -> ZooSettings {
        ZooSettings {
            epochs: 1,
            batch_size: 32,
            optimizer: Optimizer::Adam,
            lr: 1e-3,
            vary: vary.iter().map(|s| s.to_string()).collect(),
            seed: 9,
            split: [0.7, 0.15, 0.15],
            shared_data_order: false,
        }
    }

    #[test]
    fn plans_are_deterministic_and_split_by_member() {
        let arch = crate::preset("cnn-s").unwrap();
        let a = plan("z", &arch, "d", "cpu", settings(&VARY_FACTORS), 20).unwrap();
        assert_eq!(a, plan("z", &arch, "d", "cpu", settings(&VARY_FACTORS), 20).unwrap());
        let count = |s: Split| a.members.iter().filter(|m| m.split == s).count();
        assert_eq!((count(Split::Train), count(Split::Val), count(Split::Test)), (14, 3, 3));
        assert!(a.members.iter().all(|m| m.hyperparams.lr <= 1e-3 && m.hyperparams.lr >= 1e-4));
        let seeds: std::collections::HashSet<u64> = a.members.iter().map(|m| m.hyperparams.seed).collect();
        assert_eq!(seeds.len(), 20);
        for m in &a.members {
            assert!(m.arch.layers.iter().all(|l| l.activation().is_none_or(|x| x == m.hyperparams.activation)));
        }
    }

    #[test]
    fn unvaried_factors_stay_fixed_and_unknown_factors_are_rejected() {
        let arch = crate::preset("cnn-s").unwrap();
        let a = plan("z", &arch, "d", "cpu", settings(&["seed"]), 5).unwrap();
        assert!(a.members.iter().all(|m| m.hyperparams.activation == Activation::Tanh && m.hyperparams.dropout == 0.0));
        let err = plan("z", &arch, "d", "cpu", settings(&["colour"]), 5).unwrap_err().to_string();
        assert!(err.contains("cannot vary 'colour'"), "{err}");
    }

    #[test]
    fn a_zero_batch_size_is_refused() {
        let arch = crate::preset("cnn-s").unwrap();
        let err = plan("z", &arch, "d", "cpu", ZooSettings { batch_size: 0, ..settings(&["seed"]) }, 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch size must be at least 1") && err.contains("--batch-size"), "{err}");
    }
}

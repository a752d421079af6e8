//! LAMP's scores: the formula lives in the SDK ([`hyperprune_sdk::scores::lamp`]), shared
//! with the hypernetwork's base score; this module tests the masks they make.

pub use hyperprune_sdk::scores::lamp as lamp_scores;

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::masking::{global_keep, keep_for_request};
    use hyperprune_sdk::rng::SplitMix64;
    use hyperprune_sdk::{Pattern, PruneRequest, Scope};

    #[test]
    fn a_global_ranking_protects_a_layer_of_small_weights() {
        // LAMP is scale-free per layer (the SDK's tests check the values): at 50% the four
        // lowest are the two smallest of each layer, where raw magnitude would prune the whole
        // small layer.
        let big = [10.0f32, 20.0, 30.0, 40.0];
        let small = [0.1f32, 0.2, 0.3, 0.4];
        let scores = lamp_scores(&[&big, &small]);
        let keep = global_keep(&[&scores[0], &scores[1]], 0.5);
        assert_eq!(keep, vec![vec![false, false, true, true], vec![false, false, true, true]]);
    }

    fn layers(sizes: &[usize], seed: u64) -> Vec<Vec<f32>> {
        let mut rng = SplitMix64::new(seed);
        sizes.iter().map(|&n| (0..n).map(|_| 2.0 * rng.next_f32() - 1.0).collect()).collect()
    }

    fn pruned(keep: &[bool]) -> usize {
        keep.iter().filter(|&&k| !k).count()
    }

    #[test]
    fn masks_hit_the_requested_sparsity_globally_and_per_layer_and_keep_every_layer() {
        let sizes = [8 * 9, 16 * 12, 40, 3 * 8];
        let weights = layers(&sizes, 7);
        let views: Vec<&[f32]> = weights.iter().map(Vec::as_slice).collect();
        let scores = lamp_scores(&views);
        let scores: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
        let rows = [9, 12, 8, 8];
        let n: usize = sizes.iter().sum();
        for s in [0.5, 0.75, 0.9, 0.98] {
            let global = keep_for_request(&scores, &rows, &PruneRequest::global(s, 0));
            assert_eq!(global.iter().map(|k| pruned(k)).sum::<usize>(), (s * n as f64).round() as usize, "s={s}");
            // Every layer's largest weight scores 1, the highest score there is.
            assert!(global.iter().all(|k| k.contains(&true)), "s={s}: a layer was emptied");
            let request = PruneRequest { scope: Scope::PerLayer, ..PruneRequest::global(s, 0) };
            let per_layer = keep_for_request(&scores, &rows, &request);
            assert_eq!(per_layer.iter().map(|k| pruned(k)).sum::<usize>(), (s * n as f64).round() as usize);
            for (k, &size) in per_layer.iter().zip(&sizes) {
                assert!((pruned(k) as f64 - s * size as f64).abs() <= 1.0, "s={s}: {} of {size}", pruned(k));
            }
        }
    }

    #[test]
    fn two_four_keeps_the_two_largest_magnitudes_of_every_group() {
        // Within a layer LAMP is monotone in |w|, so N:M keeps what magnitude keeps.
        let weights = layers(&[4 * 8, 2 * 12], 3);
        let views: Vec<&[f32]> = weights.iter().map(Vec::as_slice).collect();
        let scores = lamp_scores(&views);
        let scores: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
        let request = PruneRequest { pattern: Pattern::NM { n: 2, m: 4 }, ..PruneRequest::global(0.9, 0) };
        let keep = keep_for_request(&scores, &[8, 12], &request);
        for (w, k) in weights.iter().zip(&keep) {
            for (group, kept) in w.chunks(4).zip(k.chunks(4)) {
                assert_eq!(kept.iter().filter(|&&k| k).count(), 2);
                let smallest_kept = group.iter().zip(kept).filter(|(_, k)| **k).map(|(x, _)| x.abs());
                let largest_pruned = group.iter().zip(kept).filter(|(_, k)| !**k).map(|(x, _)| x.abs());
                assert!(smallest_kept.fold(f32::MAX, f32::min) >= largest_pruned.fold(0.0, f32::max), "{group:?}");
            }
        }
    }
}

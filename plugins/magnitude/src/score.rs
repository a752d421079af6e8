//! Magnitude scores: the algorithm, free of any FFI.

/// How scores are normalised across layers before a global ranking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Normalize {
    /// Raw |w|.
    #[default]
    None,
    /// |w| / ‖W_l‖₂ of the weight's layer.
    LayerL2,
}

impl std::str::FromStr for Normalize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Normalize::None),
            "layer-l2" => Ok(Normalize::LayerL2),
            other => Err(format!("normalize must be none or layer-l2, got '{other}'")),
        }
    }
}

/// The importance of every weight: higher is kept longer.
pub fn magnitude_scores(layers: &[&[f32]], normalize: Normalize) -> Vec<Vec<f32>> {
    layers
        .iter()
        .map(|w| {
            let scale = match normalize {
                Normalize::None => 1.0,
                Normalize::LayerL2 => {
                    let norm = w.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
                    // An all-zero layer keeps scores of zero rather than dividing by zero.
                    if norm > 0.0 { (1.0 / norm) as f32 } else { 1.0 }
                }
            };
            w.iter().map(|x| x.abs() * scale).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::masking::global_keep;

    #[test]
    fn smallest_magnitudes_go_first_whatever_the_sign() {
        let w = [0.3f32, -0.1, -2.0, 0.05, 1.0];
        let scores = magnitude_scores(&[&w], Normalize::None);
        let keep = global_keep(&[&scores[0]], 0.4);
        assert_eq!(keep[0], vec![true, false, true, false, true]);
    }

    #[test]
    fn layer_l2_protects_a_layer_of_small_weights() {
        let big = [10.0f32, 20.0, 30.0, 40.0];
        let small = [0.1f32, 0.2, 0.3, 0.4];
        let raw = magnitude_scores(&[&big, &small], Normalize::None);
        let keep = global_keep(&[&raw[0], &raw[1]], 0.5);
        assert!(keep[1].iter().all(|k| !k), "raw ranking empties the small layer");
        let norm = magnitude_scores(&[&big, &small], Normalize::LayerL2);
        let keep = global_keep(&[&norm[0], &norm[1]], 0.5);
        assert_eq!(keep[0].iter().filter(|&&k| k).count(), 2);
        assert_eq!(keep[1].iter().filter(|&&k| k).count(), 2);
    }
}

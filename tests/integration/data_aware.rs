//! The data-aware pruners against magnitude on real data (Fashion-MNIST). Ignored by
//! default; `.ci/run` installs the dataset and runs them.

use hyperprune_tests::{bench_retention, fashion_zoo};

fn mean(results: &[(String, f64, f64)], pruner: &str, compression: f64) -> f64 {
    results
        .iter()
        .find(|(p, c, _)| p == pruner && *c == compression)
        .unwrap_or_else(|| panic!("no result for {pruner} at {compression}x: {results:?}"))
        .2
}

#[test]
#[ignore = "needs Fashion-MNIST: apt-get install -y dataset-fashion-mnist"]
fn obs_woodfisher_chita_beat_magnitude_on_cnn_s() {
    let zoo = fashion_zoo("cnn-s", 4, 2);
    let r = bench_retention(&zoo, "magnitude,obs,woodfisher,chita", "2,4", &[]);
    for c in [2.0, 4.0] {
        for p in ["obs", "woodfisher", "chita"] {
            assert!(mean(&r, p, c) > mean(&r, "magnitude", c), "{p} at {c}x: {r:?}");
        }
    }
}

#[test]
#[ignore = "needs Fashion-MNIST: apt-get install -y dataset-fashion-mnist"]
fn obs_woodfisher_chita_beat_magnitude_on_mlpnet_and_chita_plus_plus_beats_chita() {
    let zoo = fashion_zoo("mlpnet", 4, 2);
    let r = bench_retention(&zoo, "magnitude,obs,woodfisher,chita", "4,8", &[]);
    for c in [4.0, 8.0] {
        for p in ["obs", "woodfisher", "chita"] {
            assert!(mean(&r, p, c) > mean(&r, "magnitude", c), "{p} at {c}x: {r:?}");
        }
    }
    // One ridge for both (lambda=0 would choose one per stage: five times the solves).
    let single = bench_retention(&zoo, "chita", "8,16", &["--opt", "chita.stages=1", "--opt", "chita.lambda=1"]);
    let multi = bench_retention(&zoo, "chita", "8,16", &["--opt", "chita.stages=5", "--opt", "chita.lambda=1"]);
    for c in [8.0, 16.0] {
        assert!(
            mean(&multi, "chita", c) > mean(&single, "chita", c) + 0.02,
            "CHITA++ at {c}x: {multi:?} vs {single:?}"
        );
    }
}

#[test]
#[ignore = "needs Fashion-MNIST: apt-get install -y dataset-fashion-mnist"]
fn obs_on_moment_matched_inputs_beats_every_data_free_formula_on_cnn_s() {
    // Calibrated on Gaussian inputs with the train images' pixel mean and covariance (no
    // image), OBS keeps far more than LAMP, SynFlow or magnitude at 4x and 8x.
    let zoo = fashion_zoo("cnn-s", 4, 2);
    let formulas = bench_retention(&zoo, "magnitude,lamp,synflow", "4,8", &[]);
    let moments = bench_retention(&zoo, "obs", "4,8", &["--opt", "obs.calib_data=moments"]);
    for c in [4.0, 8.0] {
        let best = ["magnitude", "lamp", "synflow"].map(|p| mean(&formulas, p, c)).into_iter().fold(0.0, f64::max);
        assert!(mean(&moments, "obs", c) > best + 0.1, "{c}x: {moments:?} against {formulas:?}");
    }
}

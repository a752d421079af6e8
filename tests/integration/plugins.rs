//! Every shipped plugin loads from its `.so`, prunes exactly, and is deterministic.

use hyperprune_tests::{hyperprune, load_model, read_masks, text, write_model};

fn plugin_names() -> Vec<(String, serde_json::Value)> {
    let out = hyperprune(&["plugins", "list", "--format", "json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("plugins list --format json is JSON");
    rows.into_iter().map(|r| (r["name"].as_str().unwrap().to_string(), r)).collect()
}

#[test]
fn shipped_plugins_load_from_their_shared_libraries() {
    let names = plugin_names();
    for expected in ["lamp", "lap", "magnitude", "random", "synflow"] {
        let (_, row) =
            names.iter().find(|(n, _)| n == expected).unwrap_or_else(|| panic!("{expected} not listed: {names:?}"));
        let path = row["path"].as_str().unwrap();
        assert!(path.ends_with(&format!(".{}", std::env::consts::DLL_EXTENSION)), "{path}");
        assert_eq!(row["sdk_version"], hyperprune_sdk::SDK_VERSION);
    }
}

fn needs_data(row: &serde_json::Value) -> bool {
    row["capabilities"]["needs_data"] == true || row["capabilities"]["needs_gradients"] == true
}

/// A learnable pruner prunes only with a fitted state (`--opt state=FILE`); the generic
/// tests here skip it, `fitting.rs` covers fit, states and pruning with them.
fn learnable(row: &serde_json::Value) -> bool {
    row["capabilities"]["learnable"] == true
}

#[test]
fn data_aware_plugins_prune_exactly_with_calibration_from_digits() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-digits", 1);
    let n = load_model(&model).prunable_count();
    let data_aware: Vec<String> =
        plugin_names().into_iter().filter(|(_, r)| needs_data(r) && !learnable(r)).map(|(n, _)| n).collect();
    assert!(data_aware.len() >= 3, "obs, woodfisher and chita are installed: {data_aware:?}");
    for name in data_aware {
        for (s, scope) in [("0.5", "global"), ("0.75", "layer")] {
            let a = dir.path().join(format!("{name}-{s}-a.safetensors"));
            let b = dir.path().join(format!("{name}-{s}-b.safetensors"));
            let extra = ["--scope", scope, "--dataset", "digits", "--calib-samples", "128"];
            prune(&model, &name, s, "3", &a, &extra);
            prune(&model, &name, s, "3", &b, &extra);
            let ma = read_masks(&dir.path().join(format!("{name}-{s}-a.masks.safetensors")));
            let mb = read_masks(&dir.path().join(format!("{name}-{s}-b.masks.safetensors")));
            let pruned = ma.iter().flat_map(|(_, m)| m).filter(|&&k| !k).count();
            assert_eq!(pruned, (s.parse::<f64>().unwrap() * n as f64).round() as usize, "{name} at {s} ({scope})");
            assert_eq!(ma, mb, "{name}: same seed and data, same mask");
            let weights = load_model(&a);
            assert!(weights.values().iter().flatten().all(|x| x.is_finite()));
        }
    }
}

fn prune(model: &std::path::Path, pruner: &str, sparsity: &str, seed: &str, out: &std::path::Path, extra: &[&str]) {
    let mut args = vec!["prune", "--model", model.to_str().unwrap(), "--pruner", pruner, "--sparsity", sparsity];
    args.extend(["--seed", seed, "--out", out.to_str().unwrap()]);
    args.extend(extra);
    let o = hyperprune(&args);
    assert!(o.status.success(), "{pruner} {sparsity}: {:?}", text(&o));
}

#[test]
fn every_plugin_prunes_exactly_round_s_n_and_repeats_with_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "lenet5", 1);
    let n = load_model(&model).prunable_count();
    for (name, row) in plugin_names() {
        if needs_data(&row) || learnable(&row) {
            continue;
        }
        for (s, scope) in [("0.5", "global"), ("0.9", "global"), ("0.33", "layer")] {
            let a = dir.path().join(format!("{name}-{s}-a.safetensors"));
            let b = dir.path().join(format!("{name}-{s}-b.safetensors"));
            prune(&model, &name, s, "7", &a, &["--scope", scope]);
            prune(&model, &name, s, "7", &b, &["--scope", scope]);
            let ma = read_masks(&dir.path().join(format!("{name}-{s}-a.masks.safetensors")));
            let mb = read_masks(&dir.path().join(format!("{name}-{s}-b.masks.safetensors")));
            let pruned = ma.iter().flat_map(|(_, m)| m).filter(|&&k| !k).count();
            let expected = (s.parse::<f64>().unwrap() * n as f64).round() as usize;
            assert_eq!(pruned, expected, "{name} at {s} ({scope})");
            assert_eq!(ma, mb, "{name}: same seed, same mask");
        }
    }
}

#[test]
fn random_masks_change_with_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-s", 1);
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    prune(&model, "random", "0.5", "1", &a, &[]);
    prune(&model, "random", "0.5", "2", &b, &[]);
    assert_ne!(
        read_masks(&dir.path().join("a.masks.safetensors")),
        read_masks(&dir.path().join("b.masks.safetensors"))
    );
}

#[test]
fn magnitude_round_trip_zeroes_exactly_ninety_percent_and_keeps_biases() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "cnn-s", 3);
    let out = dir.path().join("pruned.safetensors");
    prune(&path, "magnitude", "0.9", "0", &out, &[]);
    let dense = load_model(&path);
    let pruned = load_model(&out);
    let n = dense.prunable_count();
    let zeros: usize = pruned.prunable().map(|(_, w)| w.iter().filter(|&&x| x == 0.0).count()).sum();
    assert_eq!(zeros, (0.9 * n as f64).round() as usize);
    for (p, v) in pruned.params().iter().zip(pruned.values()) {
        if !p.prunable {
            assert_eq!(Some(v.as_slice()), dense.tensor(&p.name), "bias {} must be untouched", p.name);
        }
    }
    // Every kept weight is one of the 10% largest in magnitude.
    let mut mags: Vec<f32> = dense.prunable().flat_map(|(_, w)| w.iter().map(|x| x.abs())).collect();
    mags.sort_by(f32::total_cmp);
    let threshold = mags[(0.9 * n as f64).round() as usize - 1];
    assert!(pruned.prunable().flat_map(|(_, w)| w.iter()).all(|&x| x == 0.0 || x.abs() >= threshold));
}

#[test]
fn every_plugin_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-digits", 5);
    for (name, row) in plugin_names().into_iter().filter(|(_, r)| !learnable(r)) {
        let data: &[&str] = if needs_data(&row) { &["--dataset", "digits", "--calib-samples", "64"] } else { &[] };
        let out = hyperprune(&["plugins", "info", &name, "--format", "json"]);
        let info: hyperprune_sdk::PrunerInfo = serde_json::from_slice(&out.stdout).expect("info is JSON");
        for (i, example) in info.examples.iter().enumerate() {
            let target = dir.path().join(format!("{name}-{i}.safetensors"));
            let sparsity = example.sparsity.to_string();
            let opts: Vec<String> = example.options.iter().flat_map(|o| ["--opt".to_string(), o.clone()]).collect();
            let mut opts: Vec<&str> = opts.iter().map(String::as_str).collect();
            opts.extend(data);
            prune(&model, &name, &sparsity, "0", &target, &opts);
        }
    }
}

#[test]
fn n_m_pattern_keeps_n_of_every_m() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "mlpnet", 2);
    let out = dir.path().join("nm.safetensors");
    prune(&model, "magnitude", "0.5", "0", &out, &["--pattern", "2:4"]);
    for (name, mask) in read_masks(&dir.path().join("nm.masks.safetensors")) {
        for group in mask.chunks(4) {
            assert_eq!(group.iter().filter(|&&k| k).count(), 2, "{name}");
        }
    }
}

/// `plugins info` shows a plugin on one screen, each choice option with its values: the
/// hypernetwork, the plugin with the most options, in at most 30 lines of at most 200
/// characters.
#[test]
fn plugins_info_fits_on_one_screen_and_names_every_choice() {
    let (out, err) = text(&hyperprune(&["plugins", "info", "hypernet"]));
    assert!(err.is_empty() || !err.contains("error"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() <= 30, "{} lines:\n{out}", lines.len());
    assert!(lines.iter().all(|l| l.chars().count() <= 200), "a line over 200 characters:\n{out}");
    for choice in ["[pointwise|equivariant]", "[auto|global|layer-l2|lamp]", "[topk|threshold]"] {
        assert!(out.contains(choice), "{choice} missing:\n{out}");
    }
    // A retired option is refused by name.
    let dir = tempfile::tempdir().unwrap();
    let (model, out) = (write_model(dir.path(), "cnn-digits", 1), dir.path().join("p.safetensors"));
    let mut args = vec!["prune", "--model", model.to_str().unwrap(), "--pruner", "hypernet", "--opt", "hidden=32"];
    args.extend(["--sparsity", "0.5", "--out", out.to_str().unwrap()]);
    hyperprune_tests::one_line_error(&hyperprune(&args), &["unknown option 'hidden'"]);
}

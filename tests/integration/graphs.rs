//! Residual networks with batch normalisation through the CLI: a torchvision-named state dict
//! loads by preset name, and every data-free pruner prunes it exactly, leaving batch
//! normalisation untouched.

use std::path::Path;

use hyperprune_core::engine::{Init, init_model};
use hyperprune_core::preset;
use hyperprune_tests::{hyperprune, load_model, read_masks, text};
use safetensors::tensor::{Dtype, TensorView};

/// Writes `resnet-s` with seeded weights as PyTorch's `save_file(model.state_dict())` would:
/// no hyperprune metadata, and an int64 `num_batches_tracked` beside every batch norm.
fn torchvision_state_dict(path: &Path) {
    let model = init_model(&preset("resnet-s").unwrap(), Init::KaimingUniform, 5).unwrap();
    let mut bytes: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = model
        .params()
        .iter()
        .zip(model.values())
        .map(|(p, v)| {
            // Distinct, non-default batch norm values, so "untouched" means something.
            let values: Vec<f32> =
                if p.prunable { v.clone() } else { (0..v.len()).map(|i| 0.5 + i as f32 / 64.0).collect() };
            (p.name.clone(), p.shape.clone(), Dtype::F32, values.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect();
    for p in model.params().iter().filter(|p| p.name.ends_with(".running_var")) {
        let name = p.name.replace(".running_var", ".num_batches_tracked");
        bytes.push((name, vec![], Dtype::I64, 100i64.to_le_bytes().to_vec()));
    }
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, dtype, b)| (name.clone(), TensorView::new(*dtype, shape.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn a_torchvision_named_resnet_loads_and_every_data_free_pruner_prunes_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.safetensors");
    torchvision_state_dict(&input);
    let dense = hyperprune_core::Model::load(&input, Some(&preset("resnet-s").unwrap())).unwrap();
    let prunable = dense.prunable_count();
    let convs_and_fc = dense.params().iter().filter(|p| p.prunable).count();
    assert_eq!(convs_and_fc, 1 + 3 * 2 + 2 + 1, "stem, two convs a block, two projections, fc");
    for pruner in ["magnitude", "random", "lamp", "lap", "synflow"] {
        for (extra, sparsity) in [(vec![], 0.75), (vec!["--scope", "layer"], 0.75), (vec!["--pattern", "2:4"], 0.5)] {
            let out = dir.path().join(format!("{pruner}.safetensors"));
            let mut args = vec!["prune", "--model", input.to_str().unwrap(), "--arch", "resnet-s", "--pruner", pruner];
            let s = sparsity.to_string();
            args.extend(["--sparsity", &s, "--out", out.to_str().unwrap()]);
            args.extend(&extra);
            let o = hyperprune(&args);
            assert!(o.status.success(), "{pruner} {extra:?}: {:?}", text(&o));
            let masks = read_masks(&dir.path().join(format!("{pruner}.masks.safetensors")));
            assert_eq!(masks.len(), convs_and_fc, "one mask per conv and linear weight, none for batch norm");
            assert!(masks.iter().all(|(name, _)| !name.contains("bn") && !name.contains("downsample.1")));
            let pruned = masks.iter().flat_map(|(_, m)| m).filter(|&&k| !k).count();
            if extra.is_empty() {
                assert_eq!(pruned, (sparsity * prunable as f64).round() as usize, "{pruner}: exact sparsity");
            }
            let after = load_model(&out);
            for ((p, a), b) in dense.params().iter().zip(dense.values()).zip(after.values()) {
                if !p.prunable {
                    assert_eq!(a, b, "{pruner}: '{}' untouched", p.name);
                }
            }
        }
    }
}

/// Every installed pruner on a small digits ResNet zoo, through `bench` and `prune`: no error
/// row, the exact sparsity at 2× and 4×, and batch normalisation exactly as trained. The
/// learnable hypernetwork is fitted on the zoo's train members first (a short fit); the
/// data-aware pruners take short settings, quality is measured in docs/BENCHMARKS.md.
#[test]
fn every_installed_pruner_prunes_a_digits_resnet_zoo_exactly_and_leaves_batch_norm_alone() {
    const ARCH: &str = "resnet:depth=8,width=8,input=1x8x8";
    let zoo = hyperprune_tests::digits_zoo_of(ARCH, "resnet-zoo", 5, 2, "0.4,0.2,0.4");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("hypernet.state");
    let o = hyperprune(&[
        "fit",
        "--pruner",
        "hypernet",
        "--zoo",
        zoo.to_str().unwrap(),
        "--out",
        state.to_str().unwrap(),
        "-q",
        "--opt",
        "steps=20",
        "--opt",
        "val_every=10",
        "--opt",
        "val_samples=128",
    ]);
    assert!(o.status.success(), "fit: {:?}", text(&o));
    let pruners =
        ["random", "magnitude", "lamp", "lap", "synflow", "obs", "woodfisher", "chita", "maskopt", "hypernet"];
    let listed = text(&hyperprune(&["plugins", "list"])).0;
    for p in pruners {
        assert!(listed.lines().any(|l| l.starts_with(p)), "'{p}' is installed: {listed}");
    }
    let state_opt = format!("hypernet.state={}", state.display());
    let run = dir.path().join("run");
    let o = hyperprune(&[
        "bench",
        "--zoo",
        zoo.to_str().unwrap(),
        "--pruners",
        &pruners.join(","),
        "--compression",
        "2,4",
        "--calib-samples",
        "128",
        "--opt",
        &state_opt,
        "--opt",
        "maskopt.steps=20",
        "--out",
        run.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "bench: {:?}", text(&o));
    let rows = hyperprune_tests::jsonl(&run.join("results.jsonl"));
    assert_eq!(rows.len(), pruners.len() * 2 * 2, "10 pruners × 2 compressions × 2 test members");
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r}");
        let (requested, achieved) =
            (r["requested_sparsity"].as_f64().unwrap(), r["achieved_sparsity"].as_f64().unwrap());
        assert!((requested - achieved).abs() < 1e-3, "exact sparsity: {r}");
    }
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(zoo.join("zoo.json")).unwrap()).unwrap();
    let member = meta["members"].as_array().unwrap().iter().find(|m| m["split"] == "test").unwrap();
    let input = zoo.join(member["file"].as_str().unwrap());
    let dense = load_model(&input);
    for pruner in pruners {
        let out = dir.path().join(format!("{pruner}.safetensors"));
        let mut args = vec!["prune", "--model", input.to_str().unwrap(), "--pruner", pruner, "--sparsity", "0.75"];
        args.extend(["--dataset", "digits", "--calib-samples", "128", "--out", out.to_str().unwrap(), "-q"]);
        let opt = match pruner {
            "hypernet" => format!("state={}", state.display()),
            "maskopt" => "steps=20".to_string(),
            _ => String::new(),
        };
        if !opt.is_empty() {
            args.extend(["--opt", &opt]);
        }
        let o = hyperprune(&args);
        assert!(o.status.success(), "{pruner}: {:?}", text(&o));
        let after = load_model(&out);
        for ((p, a), b) in dense.params().iter().zip(dense.values()).zip(after.values()) {
            if !p.prunable {
                assert_eq!(a, b, "{pruner}: '{}' untouched", p.name);
            }
        }
    }
}

/// One hypernetwork over ResNets of two sizes: a merged digits zoo of
/// `resnet:depth=8,width=8` and `resnet:depth=14,width=16` members fits one state, which
/// prunes the test members of both sizes exactly.
#[test]
fn the_hypernetwork_fits_on_a_zoo_of_two_resnet_sizes_and_prunes_both() {
    let small =
        hyperprune_tests::digits_zoo_of("resnet:depth=8,width=8,input=1x8x8", "resnet-8", 3, 1, "0.34,0.33,0.33");
    let large =
        hyperprune_tests::digits_zoo_of("resnet:depth=14,width=16,input=1x8x8", "resnet-14", 3, 1, "0.34,0.33,0.33");
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed");
    let o = hyperprune_tests::zoo_merge(&mixed, &[&small, &large]);
    assert!(o.status.success(), "merge: {:?}", text(&o));
    // `zoo show` names both architectures, and each member's.
    let o = hyperprune(&["zoo", "show", mixed.to_str().unwrap()]);
    let (shown, _) = text(&o);
    assert!(o.status.success(), "show: {shown}");
    let header = shown.lines().next().unwrap();
    assert!(header.contains("2 architectures (resnet:depth=8,width=8,input=1x8x8: 3"), "{header}");
    assert!(header.contains("resnet:depth=14,width=16,input=1x8x8: 3)"), "{header}");
    let members: Vec<&str> = shown.lines().filter(|l| l.contains(":0000 ")).collect();
    assert_eq!(members.len(), 2, "{shown}");
    assert!(members.iter().all(|l| l.trim_end().ends_with("input=1x8x8")), "{shown}");
    let state = dir.path().join("hypernet.state");
    let mut args = vec!["fit", "--pruner", "hypernet", "--zoo", mixed.to_str().unwrap(), "--out"];
    args.extend([state.to_str().unwrap(), "-q", "--opt", "steps=20", "--opt", "val_every=10"]);
    args.extend(["--opt", "val_samples=128", "--opt", "calib_samples=64"]);
    let o = hyperprune(&args);
    assert!(o.status.success(), "fit: {:?}", text(&o));
    let header = std::fs::read(&state).unwrap();
    let header: serde_json::Value = serde_json::from_slice(header.split(|&b| b == b'\n').nth(1).unwrap()).unwrap();
    let archs = header["fit_zoo"]["archs"].as_array().unwrap().len();
    assert_eq!(archs, 2, "fitted on both sizes: {}", header["fit_zoo"]);
    let run = dir.path().join("run");
    let state_opt = format!("hypernet.state={}", state.display());
    let mut args = vec!["bench", "--zoo", mixed.to_str().unwrap(), "--pruners", "magnitude,hypernet"];
    args.extend(["--compression", "2,4,8", "--opt", &state_opt, "--out", run.to_str().unwrap(), "-q"]);
    let o = hyperprune(&args);
    assert!(o.status.success(), "bench: {:?}", text(&o));
    let rows = hyperprune_tests::jsonl(&run.join("results.jsonl"));
    assert_eq!(rows.len(), 2 * 3 * 2, "2 pruners × 3 compressions × 2 test members (one of each size)");
    let sizes: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r["arch"].as_str()).collect();
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r}");
        let (requested, achieved) =
            (r["requested_sparsity"].as_f64().unwrap(), r["achieved_sparsity"].as_f64().unwrap());
        assert!((requested - achieved).abs() < 1e-3, "exact sparsity: {r}");
    }
}

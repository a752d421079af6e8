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
    for pruner in ["magnitude", "random", "lamp", "lap"] {
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

//! A ResNet built, given batch norm statistics and evaluated by PyTorch
//! (`tests/data/torch-resnet8`, written by `scripts/torch_resnet_fixture.py`): its raw
//! `state_dict` loads under the preset name, the engines reproduce PyTorch's logits, and
//! pruning it through the CLI leaves every batch norm tensor as PyTorch wrote it.

use std::path::PathBuf;

use hyperprune_core::arch::ParamLayerKind;
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::Engine;
use hyperprune_core::{Model, preset};
use hyperprune_engine_burn::FlexEngine;
use hyperprune_engine_cpu::CpuEngine;
use hyperprune_tests::{hyperprune, load_model, read_masks, root, text};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

/// The preset the fixture was built as.
const ARCH: &str = "resnet:depth=8,width=8,input=1x8x8";

fn fixture(file: &str) -> PathBuf {
    root().join("tests/data/torch-resnet8").join(file)
}

fn pytorch_model() -> Model {
    Model::load(&fixture("model.safetensors"), Some(&preset(ARCH).unwrap())).expect("the PyTorch state dict loads")
}

/// The stored inputs (labels are unused by `logits`) and PyTorch's logits `[16, 10]`.
fn inputs_and_logits() -> (Samples, Vec<f32>) {
    let bytes = std::fs::read(fixture("io.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        (view.shape().to_vec(), values)
    };
    let (shape, images) = f32s("inputs");
    let (logit_shape, logits) = f32s("logits");
    assert_eq!((shape.as_slice(), logit_shape.as_slice()), (&[16, 1, 8, 8][..], &[16, 10][..]));
    (Samples { shape: [1, 8, 8], images, labels: vec![0; 16] }, logits)
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_pytorch_resnet_loads_by_preset_name_and_the_engines_reproduce_its_logits() {
    let model = pytorch_model();
    let (samples, expected) = inputs_and_logits();
    let engines: [Box<dyn Engine>; 2] = [Box::new(FlexEngine::new()), Box::new(CpuEngine::new())];
    for engine in &engines {
        let logits = engine.logits(&model, &samples).unwrap_or_else(|e| panic!("{}: {e}", engine.name()));
        let diff = max_abs_difference(&logits, &expected);
        eprintln!("{} vs PyTorch 2.15: max |logit difference| {diff:.2e}", engine.name());
        // The logits span [-2.9, 2.1]. PyTorch's own f32 logits differ from its f64 ones by 7e-7,
        // so another summation order stays near 1e-6; a batch norm epsilon of 1e-4 instead of
        // 1e-5 already moves them by 5.8e-4 (both measured in PyTorch).
        assert!(diff <= 1e-4, "{}: max |logit difference| {diff:.2e} > 1e-4", engine.name());
    }
}

#[test]
fn pruning_the_pytorch_resnet_leaves_every_batch_norm_tensor_as_pytorch_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pruned.safetensors");
    let input = fixture("model.safetensors");
    let o = hyperprune(&[
        "prune",
        "--model",
        input.to_str().unwrap(),
        "--arch",
        ARCH,
        "--pruner",
        "magnitude",
        "--sparsity",
        "0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));

    let dense = pytorch_model();
    let pruned = load_model(&out);
    let mut compared = 0;
    for ((p, a), b) in dense.params().iter().zip(dense.values()).zip(pruned.values()) {
        if p.kind == ParamLayerKind::BatchNorm2d {
            assert_eq!(a, b, "'{}' changed", p.name);
            compared += 1;
        }
    }
    // Scale, shift, running mean and variance of nine batch norms: the stem's, two in each of
    // the three blocks, and the two projections'.
    assert_eq!(compared, 9 * 4, "batch norm tensors compared");

    let masks = read_masks(&dir.path().join("pruned.masks.safetensors"));
    assert_eq!(masks.len(), 10, "stem, six block convs, two projections, fc");
    let removed = masks.iter().flat_map(|(_, m)| m).filter(|&&keep| !keep).count();
    assert_eq!(removed, (0.5 * dense.prunable_count() as f64).round() as usize, "exact global sparsity");
}

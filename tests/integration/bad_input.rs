//! Bad input: each a one-line error naming the file and the problem, exit code 2, and no
//! output file left behind.

use std::path::Path;

use hyperprune_tests::{hyperprune, load_model, one_line_error, text, write_model};

fn prune_fails(model: &Path, extra: &[&str], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let mut args = vec!["prune", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(extra);
    let o = hyperprune(&args);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    for e in expected {
        assert!(stderr.contains(e), "expected '{e}' in: {stderr}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no partial output for {args:?}");
}

const MAGNITUDE_HALF: [&str; 4] = ["--pruner", "magnitude", "--sparsity", "0.5"];

#[test]
fn missing_model_file() {
    prune_fails(Path::new("/nonexistent/model.safetensors"), &MAGNITUDE_HALF, &["model.safetensors", "not found"]);
}

#[test]
fn corrupted_and_truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_model(dir.path(), "cnn-s", 1);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    prune_fails(&truncated, &MAGNITUDE_HALF, &["truncated.safetensors", "not a valid safetensors"]);
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    prune_fails(&garbage, &MAGNITUDE_HALF, &["garbage.safetensors", "not a valid safetensors"]);
}

#[test]
fn tensor_shape_not_matching_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-s", 1);
    let mut args = vec!["--arch", "lenet5"];
    args.extend(MAGNITUDE_HALF);
    prune_fails(&model, &args, &["cnn-s-1.safetensors", "'0.weight'", "[8, 1, 5, 5]", "[6, 1, 5, 5]"]);
}

#[test]
fn unknown_preset() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-s", 1);
    let mut args = vec!["--arch", "resnet9000"];
    args.extend(MAGNITUDE_HALF);
    prune_fails(&model, &args, &["unknown architecture preset 'resnet9000'", "cnn-s"]);
}

#[test]
fn sparsity_outside_unit_interval() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-s", 1);
    for s in ["1.0", "-0.1", "1.5"] {
        prune_fails(&model, &["--pruner", "magnitude", "--sparsity", s], &["sparsity must be in [0, 1)"]);
    }
}

#[test]
fn unknown_option_and_wrongly_typed_option() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-s", 1);
    let mut args = MAGNITUDE_HALF.to_vec();
    args.extend(["--opt", "damping=0.1"]);
    prune_fails(&model, &args, &["pruner 'magnitude'", "unknown option 'damping'", "normalize"]);
    let mut args = MAGNITUDE_HALF.to_vec();
    args.extend(["--opt", "normalize=l7"]);
    prune_fails(&model, &args, &["'normalize' expects one of none, layer-l2"]);
}

#[test]
fn unknown_pruner_lists_the_installed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-s", 1);
    prune_fails(&model, &["--pruner", "nope", "--sparsity", "0.5"], &["unknown pruner 'nope'", "magnitude", "random"]);
}

#[test]
fn device_cuda_without_cuda_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zoo");
    let o = hyperprune(&[
        "zoo",
        "train",
        "--members",
        "1",
        "--epochs",
        "1",
        "--device",
        "cuda",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--device cuda") && stderr.contains("--features cuda"), "{stderr}");
    if !std::path::Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1").exists() {
        assert!(stderr.contains("libcuda.so.1"), "names the missing driver library: {stderr}");
    }
    assert!(!out.exists(), "nothing written");
    let o = hyperprune(&["zoo", "train", "--members", "1", "--device", "tpu", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("unknown device 'tpu'"));
}

#[test]
fn zoo_train_with_batch_size_zero_is_one_line_and_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zoo");
    let o = hyperprune(&["zoo", "train", "--members", "2", "--batch-size", "0", "--out", out.to_str().unwrap()]);
    one_line_error(&o, &["invalid value '0' for '--batch-size", "at least 1"]);
    assert!(!out.exists(), "no output folder is left behind");
}

#[test]
fn eval_refuses_flat_masks_and_masks_for_unknown_tensors_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = write_model(dir.path(), "cnn-digits", 1);
    let model = load_model(&model_path);
    let masks = |flat: bool, extra: Option<&str>| {
        let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = model
            .prunable()
            .map(|(p, w)| (p.name.clone(), if flat { vec![w.len()] } else { p.shape.clone() }, vec![1; w.len()]))
            .collect();
        entries.extend(extra.map(|name| (name.to_string(), vec![3], vec![1; 3])));
        hyperprune_core::model::encode_u8(&entries)
    };
    let eval = |masks_path: &Path| {
        hyperprune(&[
            "eval",
            "--model",
            model_path.to_str().unwrap(),
            "--masks",
            masks_path.to_str().unwrap(),
            "--dataset",
            "digits",
        ])
    };
    let good = dir.path().join("good.masks.safetensors");
    std::fs::write(&good, masks(false, None)).unwrap();
    assert!(eval(&good).status.success(), "{:?}", text(&eval(&good)));
    let flat = dir.path().join("flat.masks.safetensors");
    std::fs::write(&flat, masks(true, None)).unwrap();
    one_line_error(&eval(&flat), &["flat.masks.safetensors", "'0.weight'", "the weight's shape"]);
    let unknown = dir.path().join("unknown.masks.safetensors");
    std::fs::write(&unknown, masks(false, Some("fc9.weight"))).unwrap();
    one_line_error(&eval(&unknown), &["unknown.masks.safetensors", "'fc9.weight'", "not a prunable weight"]);
}

#[test]
fn repeat_times_calls_in_process_and_refuses_zero_or_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-s", 3);
    let out = dir.path().join("p.safetensors");
    let o = hyperprune(
        &[
            &["prune", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()][..],
            &MAGNITUDE_HALF,
            &["--repeat", "7"],
        ]
        .concat(),
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("7 calls, same masks each time: median "), "{stdout}");
    assert!(out.is_file(), "written once");
    prune_fails(&model, &[&MAGNITUDE_HALF[..], &["--repeat", "0"]].concat(), &["'0' for '--repeat", "at least 1"]);
    prune_fails(
        &model,
        &[&MAGNITUDE_HALF[..], &["--repeat", "3", "--isolate", "worker"]].concat(),
        &["--repeat 3", "--isolate none"],
    );
}

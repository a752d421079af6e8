//! Bad input: each a one-line error naming the file and the problem, exit code 2, and no
//! output file left behind.

use std::path::Path;

use hyperprune_tests::{hyperprune, text, write_model};

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

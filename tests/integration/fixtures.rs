//! The host against plugins that misbehave, libraries that are not plugins, and the
//! README's out-of-tree example built as a third party would build it.

use std::path::Path;

use abi_stable::library::lib_header_from_path;
use hyperprune_core::model_ref;
use hyperprune_sdk::{NoData, PruneRequest, PrunerModRef, context_ref};
use hyperprune_tests::{fixtures, hyperprune, load_model, read_masks, text, write_model};

fn plugin_arg(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

#[test]
fn a_panicking_plugin_is_reported_and_the_host_survives() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-digits", 1);
    let out = dir.path().join("out.safetensors");
    let o = hyperprune(&[
        "--plugin",
        &plugin_arg(&fixtures().misbehave),
        "prune",
        "--model",
        model.to_str().unwrap(),
        "--pruner",
        "misbehave",
        "--opt",
        "mode=panic",
        "--sparsity",
        "0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "a clean failure, not an abort: {stderr}");
    assert!(stderr.contains("plugin 'misbehave' panicked: fixture panic on a model of 3592 weights (at "), "{stderr}");
    assert!(!stderr.contains("panicked at") && !stderr.contains("RUST_BACKTRACE"), "no panic hook text: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!out.exists(), "nothing is written after a failure");
}

#[test]
fn wrong_length_masks_and_nan_weights_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-digits", 1);
    let out = dir.path().join("out.safetensors");
    for (mode, expected) in [("wrong-length", "mask of '0.weight' has length 3"), ("nan-weights", "NaN")] {
        let o = hyperprune(&[
            "--plugin",
            &plugin_arg(&fixtures().misbehave),
            "prune",
            "--model",
            model.to_str().unwrap(),
            "--pruner",
            "misbehave",
            "--opt",
            &format!("mode={mode}"),
            "--sparsity",
            "0.5",
            "--out",
            out.to_str().unwrap(),
        ]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("invalid outcome") && stderr.contains(expected), "{mode}: {stderr}");
        assert!(!out.exists());
    }
}

#[test]
fn incompatible_sdk_version_is_one_line_naming_both_versions() {
    let o = hyperprune(&["--plugin", &plugin_arg(&fixtures().wrong_sdk), "plugins", "list"]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("0.2.0") && stderr.contains(hyperprune_sdk::SDK_VERSION), "{stderr}");
}

#[test]
fn non_plugins_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.so");
    std::fs::write(&text_file, "just some text\n").unwrap();
    for (path, expected) in [
        (fixtures().not_a_plugin.clone(), "not a hyperprune plugin"),
        (text_file, "not a loadable shared library"),
        (dir.path().join("missing.so"), "plugin file not found"),
    ] {
        let o = hyperprune(&["--plugin", &plugin_arg(&path), "plugins", "list"]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected) && stderr.contains(path.file_name().unwrap().to_str().unwrap()), "{stderr}");
    }
}

#[test]
fn out_of_tree_example_plugin_builds_loads_and_prunes_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "mlpnet", 4);
    let out = dir.path().join("rows.safetensors");
    let o = hyperprune(&[
        "--plugin",
        &plugin_arg(&fixtures().row_magnitude),
        "prune",
        "--model",
        model.to_str().unwrap(),
        "--pruner",
        "row-magnitude",
        "--sparsity",
        "0.75",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let dense = load_model(&model);
    for ((name, mask), (p, _)) in read_masks(&dir.path().join("rows.masks.safetensors")).iter().zip(dense.prunable()) {
        assert_eq!(name, &p.name);
        for row in mask.chunks(p.shape[1]) {
            assert_eq!(row.iter().filter(|&&k| k).count(), p.shape[1] / 4, "{name}: 75% pruned in every row");
        }
    }
}

#[test]
fn a_plugin_sees_the_hosts_buffers_without_a_copy() {
    // Load the fixture in-process, exactly as the host does, and hand it a 1M-weight model:
    // the address the plugin reports must be the address of our own buffer.
    let header = lib_header_from_path(&fixtures().misbehave).unwrap();
    let module = header.init_root_module::<PrunerModRef>().unwrap();
    let mut pruner = (module.new())().unwrap();
    pruner.configure(r#"{"mode": "echo-pointer"}"#.into()).unwrap();
    let spec = hyperprune_core::ArchSpec::from_json(
        r#"{"name":"wide","input":[1,32,32],"classes":10,"layers":[{"type":"flatten"},{"type":"linear","out_features":1000},{"type":"relu"},{"type":"linear","out_features":10}]}"#,
    )
    .unwrap();
    let model = hyperprune_core::Model::zeros(spec).unwrap();
    assert!(model.prunable_count() > 1_000_000);
    let host_ptr = model.values()[0].as_ptr() as usize;
    let ctx = NoData;
    let err =
        model_ref(&model, |view| pruner.prune(view, &PruneRequest::global(0.5, 0), context_ref(&ctx)).unwrap_err());
    assert_eq!(err.message.as_str(), format!("ptr={host_ptr}"));
}

#[test]
fn the_readme_plugin_is_the_example_crate_verbatim() {
    let readme = std::fs::read_to_string(hyperprune_tests::root().join("README.md")).unwrap();
    let example = std::fs::read_to_string(hyperprune_tests::root().join("examples/row-magnitude/src/lib.rs")).unwrap();
    let start = readme.find("```rust\n//! Row-wise").expect("the README shows the example") + "```rust\n".len();
    let end = start + readme[start..].find("```").expect("a closed code block");
    assert_eq!(&readme[start..end], example, "README's 'Write a pruner' block and examples/row-magnitude differ");
    assert!(example.lines().count() <= 32, "the example stays about 30 lines");
}

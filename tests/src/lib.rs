//! Shared helpers for the integration tests: build the host and plugins once, build the
//! fixture plugins and the out-of-tree example the way a third party would, run the CLI,
//! and make model files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use hyperprune_core::engine::{Init, init_model};
use hyperprune_core::{Model, preset};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// `target/release` of the workspace (`CARGO_TARGET_DIR` respected).
pub fn release_dir() -> PathBuf {
    target_dir().join("release")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn cargo(args: &[&str], dir: &Path) {
    let out = Command::new(env!("CARGO")).args(args).current_dir(dir).output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the host binary and every default plugin (release), once per test process.
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| cargo(&["build", "--release"], &root()));
}

/// The fixture plugins and the out-of-tree example, built once into `target/fixtures`.
pub struct Fixtures {
    /// A plugin whose behaviour is chosen by `--opt mode=...` (panic, wrong-length, ...).
    pub misbehave: PathBuf,
    /// Exports an incompatible SDK version.
    pub wrong_sdk: PathBuf,
    /// A shared library that is not a plugin.
    pub not_a_plugin: PathBuf,
    /// A learnable pruner: fits per-layer |w| quantiles, saves them as JSON.
    pub learner: PathBuf,
    /// The README's out-of-tree example plugin.
    pub row_magnitude: PathBuf,
}

/// Builds the fixtures (once per test process).
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let target = target_dir().join("fixtures");
        let target_arg = target.to_string_lossy().into_owned();
        cargo(&["build", "--target-dir", &target_arg], &root().join("tests/fixtures"));
        cargo(&["build", "--target-dir", &target_arg], &root().join("examples/row-magnitude"));
        let lib = |name: &str| target.join("debug").join(format!("lib{name}.{}", std::env::consts::DLL_EXTENSION));
        Fixtures {
            misbehave: lib("hyperprune_fixture_misbehave"),
            wrong_sdk: lib("hyperprune_fixture_wrong_sdk"),
            not_a_plugin: lib("hyperprune_fixture_not_a_plugin"),
            learner: lib("hyperprune_fixture_learner"),
            row_magnitude: lib("row_magnitude"),
        }
    })
}

/// Runs the `hyperprune` binary with `args` (plugin path variable cleared).
pub fn hyperprune(args: &[&str]) -> Output {
    hyperprune_with_env(args, &[])
}

/// [`hyperprune`] with these environment variables set (`HYPERPRUNE_PLUGIN_PATH` among them
/// if given; it is otherwise removed).
pub fn hyperprune_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    ensure_built();
    Command::new(release_dir().join("hyperprune"))
        .args(args)
        .env_remove("HYPERPRUNE_PLUGIN_PATH")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("the hyperprune binary runs")
}

/// The rows of a JSON-lines file (results, fit curves).
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Stdout and stderr of a run, for assertion messages.
pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes a freshly initialised model of `preset_name` to `dir/name.safetensors`.
pub fn write_model(dir: &Path, preset_name: &str, seed: u64) -> PathBuf {
    let model =
        init_model(&preset(preset_name).expect("known preset"), Init::KaimingUniform, seed).expect("valid preset");
    let path = dir.join(format!("{preset_name}-{seed}.safetensors"));
    model.save(&path).expect("model saves");
    path
}

/// Reads a masks file written by `hyperprune prune`: `(tensor name, keep mask)` pairs.
pub fn read_masks(path: &Path) -> Vec<(String, Vec<bool>)> {
    let bytes = std::fs::read(path).expect("masks file exists");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("masks file is safetensors");
    let mut masks: Vec<(String, Vec<bool>)> =
        st.tensors().into_iter().map(|(name, view)| (name, view.data().iter().map(|&b| b == 1).collect())).collect();
    masks.sort_by(|a, b| a.0.cmp(&b.0));
    masks
}

/// Trains a `cnn-digits` zoo on the embedded digits data into a fresh temporary folder
/// `name` (batch 32, lr 3e-3) and returns the folder. `split` is `train,val,test`.
pub fn digits_zoo(name: &str, members: usize, epochs: usize, split: &str) -> PathBuf {
    digits_zoo_of("cnn-digits", name, members, epochs, split)
}

/// [`digits_zoo`] of another architecture (a preset name or a spec file).
pub fn digits_zoo_of(arch: &str, name: &str, members: usize, epochs: usize, split: &str) -> PathBuf {
    let dir = tempfile::tempdir().expect("temp dir").keep().join(name);
    let (members, epochs) = (members.to_string(), epochs.to_string());
    let o = hyperprune(&[
        "zoo",
        "train",
        "--arch",
        arch,
        "--members",
        &members,
        "--epochs",
        &epochs,
        "--batch-size",
        "32",
        "--lr",
        "3e-3",
        "--split",
        split,
        "--out",
        dir.to_str().expect("utf-8 path"),
        "-q",
    ]);
    assert!(o.status.success(), "training a digits zoo: {:?}", text(&o));
    dir
}

/// `hyperprune zoo merge --out OUT ZOOS...`.
pub fn zoo_merge(out: &Path, zoos: &[&Path]) -> Output {
    let mut args = vec!["zoo", "merge", "--out", out.to_str().expect("utf-8 path")];
    args.extend(zoos.iter().map(|z| z.to_str().expect("utf-8 path")));
    hyperprune(&args)
}

/// Asserts that `o` is the CLI's bad-input exit: code 2 and one line on stderr that
/// contains every string of `expected`.
pub fn one_line_error(o: &Output, expected: &[&str]) {
    let (_, stderr) = text(o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for e in expected {
        assert!(stderr.contains(e), "expected '{e}' in: {stderr}");
    }
}

/// Loads a model file.
pub fn load_model(path: &Path) -> Model {
    Model::load(path, None).expect("model loads")
}

/// A small Fashion-MNIST zoo of `arch` (`members` members, `epochs` epochs, all members in
/// the test split), trained once per test process through the CLI. Panics with the
/// install hint when the dataset is missing.
pub fn fashion_zoo(arch: &str, members: usize, epochs: usize) -> PathBuf {
    static ZOOS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let key = format!("{arch}-{members}-{epochs}");
    let mut zoos = ZOOS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, dir)) = zoos.iter().find(|(k, _)| *k == key) {
        return dir.clone();
    }
    let dir = tempfile::tempdir().expect("temp dir").keep().join(format!("fmnist-{key}"));
    let (members_arg, epochs_arg) = (members.to_string(), epochs.to_string());
    let out = hyperprune(&[
        "zoo",
        "train",
        "--arch",
        arch,
        "--dataset",
        "fashion-mnist",
        "--members",
        &members_arg,
        "--epochs",
        &epochs_arg,
        "--vary",
        "seed",
        "--split",
        "0,0,1",
        "--seed",
        "5",
        "--out",
        dir.to_str().expect("utf-8 path"),
        "-q",
    ]);
    assert!(
        out.status.success(),
        "training a Fashion-MNIST zoo (apt-get install -y dataset-fashion-mnist?): {:?}",
        text(&out)
    );
    zoos.push((key, dir.clone()));
    dir
}

/// Runs a bench and returns mean retention per (pruner, compression).
pub fn bench_retention(zoo: &Path, pruners: &str, compressions: &str, extra: &[&str]) -> Vec<(String, f64, f64)> {
    let run = tempfile::tempdir().expect("temp dir").keep();
    let mut args = vec![
        "bench",
        "--zoo",
        zoo.to_str().expect("utf-8 path"),
        "--pruners",
        pruners,
        "--compression",
        compressions,
        "--out",
        run.to_str().expect("utf-8 path"),
        "-q",
    ];
    args.extend(extra);
    let out = hyperprune(&args);
    assert!(out.status.success(), "bench failed: {:?}", text(&out));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(run.join("results.jsonl"))
        .expect("results written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    let mut groups: Vec<(String, f64, Vec<f64>)> = Vec::new();
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r}");
        let (p, c) =
            (r["pruner"].as_str().expect("pruner").to_string(), r["compression"].as_f64().expect("compression"));
        let v = r["retention"].as_f64().expect("retention");
        match groups.iter_mut().find(|(gp, gc, _)| *gp == p && *gc == c) {
            Some(g) => g.2.push(v),
            None => groups.push((p, c, vec![v])),
        }
    }
    groups.into_iter().map(|(p, c, v)| (p, c, v.iter().sum::<f64>() / v.len() as f64)).collect()
}

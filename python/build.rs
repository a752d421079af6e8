//! With the `bundle` feature (on when maturin builds the package: `pip install ./python`,
//! `maturin build`), puts the in-tree pruner plugins and the `hyperprune` executable inside
//! the Python package, in `hyperprune/plugins/` and `hyperprune/bin/`, where maturin picks
//! them up for the wheel. A plain `cargo build` of the workspace does nothing here.
//!
//! The files come from `$HYPERPRUNE_BUNDLE_FROM` when it names a folder that holds them (a
//! release build of the workspace's default members, e.g. `target/release`); otherwise a
//! release build of the default members is run here, in its own target folder
//! (`<target>/python-bundle`), since the outer build holds the lock on the usual one.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGIN_PREFIX: &str = "libhyperprune_plugin_";

fn main() {
    println!("cargo:rerun-if-env-changed=HYPERPRUNE_BUNDLE_FROM");
    if env::var_os("CARGO_FEATURE_BUNDLE").is_none() {
        return;
    }
    let here = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = here.parent().expect("python/ sits in the workspace").to_path_buf();
    for watched in ["sdk", "core", "engine-cpu", "engine-burn", "host", "plugins", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // The copies too: a package folder cleaned of them (git clean) gets them back.
    for copied in ["hyperprune/plugins", "hyperprune/bin/hyperprune"] {
        println!("cargo:rerun-if-changed={}", here.join(copied).display());
    }
    let built = match env::var_os("HYPERPRUNE_BUNDLE_FROM").map(PathBuf::from) {
        Some(dir) if has_plugins(&dir) => dir,
        Some(dir) => fail(&format!(
            "HYPERPRUNE_BUNDLE_FROM={}: expected the `hyperprune` executable and {PLUGIN_PREFIX}*.so files there; build them first (cargo build --release) or unset it",
            dir.display()
        )),
        None => build_default_members(&root),
    };
    let plugins = here.join("hyperprune").join("plugins");
    let bin = here.join("hyperprune").join("bin");
    for dir in [&plugins, &bin] {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    }
    for entry in read_dir(&plugins) {
        if is_plugin(&entry) {
            std::fs::remove_file(&entry).unwrap_or_else(|e| fail(&format!("{}: {e}", entry.display())));
        }
    }
    for entry in read_dir(&built) {
        if is_plugin(&entry) {
            copy(&entry, &plugins.join(entry.file_name().expect("a file")));
        }
    }
    copy(&built.join("hyperprune"), &bin.join("hyperprune"));
}

/// Runs `cargo build --release` of the default members (the `hyperprune` command and every
/// in-tree plugin) and returns the folder with the results.
fn build_default_members(root: &Path) -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = target.join("python-bundle");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root).args(["build", "--release", "--target-dir"]).arg(&target);
    // What the outer build set for this crate alone must not reach the inner one.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"] {
        command.env_remove(var);
    }
    let status = command.status().unwrap_or_else(|e| fail(&format!("running cargo: {e}")));
    if !status.success() {
        fail(&format!("cargo build --release of the plugins failed ({status})"));
    }
    target.join("release")
}

fn has_plugins(dir: &Path) -> bool {
    dir.is_dir() && read_dir(dir).iter().any(|p| is_plugin(p)) && dir.join("hyperprune").is_file()
}

fn is_plugin(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PLUGIN_PREFIX) && n.ends_with(".so"))
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect()
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| fail(&format!("copying {} to {}: {e}", from.display(), to.display())));
}

fn fail(message: &str) -> ! {
    panic!("hyperprune's Python package: {message}");
}

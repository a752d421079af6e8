//! Reading the user's files: architectures and models, with every failure marked as bad
//! input (exit code 2) and naming the file.

use std::path::Path;

use hyperprune_core::{ArchSpec, Model, preset};

use crate::failure::bad_input;

/// A preset name or a spec JSON file.
///
/// # Errors
/// Bad input: unreadable or invalid file, unknown preset.
pub fn arch(name_or_path: &str) -> anyhow::Result<ArchSpec> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
        return ArchSpec::from_json(&text).map_err(|e| bad_input(format!("{}: {e}", path.display())));
    }
    preset(name_or_path).map_err(bad_input)
}

/// Loads a model, with an optional architecture override.
///
/// # Errors
/// Bad input naming the file and the problem.
pub fn model(path: &Path, arch_override: Option<&str>) -> anyhow::Result<Model> {
    let spec = arch_override.map(arch).transpose()?;
    if !path.exists() {
        return Err(bad_input(format!("{}: model file not found", path.display())));
    }
    Model::load(path, spec.as_ref()).map_err(bad_input)
}

//! Reading the user's files: architectures, models and datasets, with every failure marked as bad
//! input (exit code 2) and naming the file.

use std::path::Path;

use hyperprune_core::dataset::{DataOptions, Dataset};
use hyperprune_core::{ArchSpec, Model, preset};

use crate::cli::DataArgs;

use crate::failure::bad_input;

/// A preset name or a spec JSON file.
///
/// # Errors
/// Bad input: unreadable or invalid file, unknown preset.
pub fn arch(name_or_path: &str) -> anyhow::Result<ArchSpec> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        return ArchSpec::read(path).map_err(bad_input);
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

/// Loads the dataset named in `args`.
///
/// # Errors
/// Bad input: unknown dataset, missing or malformed files.
pub fn dataset(args: &DataArgs) -> anyhow::Result<Dataset> {
    let options = DataOptions { data_dir: args.data_dir.clone() };
    hyperprune_core::dataset::load(&args.dataset, &options).map_err(bad_input)
}

/// Checks that an architecture's input shape and classes match the dataset's.
///
/// # Errors
/// Bad input saying both shapes.
pub fn check_fits(spec: &ArchSpec, data: &Dataset) -> anyhow::Result<()> {
    if spec.input != data.input_shape() || spec.classes != data.classes {
        return Err(bad_input(format!(
            "architecture '{}' takes {:?} inputs and {} classes, but dataset '{}' has {:?} and {}",
            spec.name,
            spec.input,
            spec.classes,
            data.name,
            data.input_shape(),
            data.classes
        )));
    }
    Ok(())
}

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

/// Refuses an output that would overwrite one of the command's inputs: `outputs` are the
/// files the command writes, `inputs` the files it reads, each with the option that named
/// it. Paths are compared after resolving links and `..`, so `./m.safetensors` and
/// `m.safetensors` are one file; an output that does not exist yet overwrites nothing.
///
/// # Errors
/// Bad input naming both options and the file.
pub fn refuse_overwriting(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    for (out_flag, out) in outputs {
        let Ok(resolved) = out.canonicalize() else { continue };
        for (in_flag, input) in inputs {
            if input.canonicalize().is_ok_and(|i| i == resolved) {
                return Err(bad_input(format!(
                    "{}: {out_flag} would overwrite the {in_flag} it reads; write the output to another path",
                    out.display()
                )));
            }
        }
    }
    Ok(())
}

/// Checks that every member of `zoo` takes the inputs and classes of its dataset `data`: a
/// `zoo.json` whose `dataset` does not match its members would otherwise fail deep inside an
/// engine.
///
/// # Errors
/// Bad input naming the zoo file, the first member that does not fit, and both shapes.
pub fn check_zoo_fits(zoo: &hyperprune_core::zoo::Zoo, data: &Dataset) -> anyhow::Result<()> {
    let misfit =
        zoo.meta().members.iter().find(|m| m.arch.input != data.input_shape() || m.arch.classes != data.classes);
    if let Some(m) = misfit {
        return Err(bad_input(format!(
            "{}: member '{}' is a '{}' taking {:?} inputs and {} classes, but the zoo's dataset '{}' has {:?} and {}; \
             field 'dataset' does not match the members",
            zoo.dir().join(hyperprune_core::zoo::ZOO_FILE).display(),
            m.id,
            m.arch.name,
            m.arch.input,
            m.arch.classes,
            data.name,
            data.input_shape(),
            data.classes
        )));
    }
    Ok(())
}

//! Masks files: one u8 tensor per prunable weight, named and shaped like the weight, `1`
//! for a kept weight and `0` for a pruned one (`prune` writes them beside the pruned model as
//! `<name>.masks.safetensors`; PyTorch `bool` tensors are read too).
//!
//! The reader is strict: a mask for a tensor the model does not have, a mask whose shape
//! is not the weight's (a flat `[n]` mask included), or a value other than 0 and 1 means the file belongs to another model
//! or was written wrongly, so it is refused rather than applied.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::model::{Model, ModelError};

/// Reads the masks of `model`'s prunable weights from `path`, in [`Model::prunable`] order
/// (`true` = kept).
///
/// # Errors
/// A [`ModelError`] naming the file: unreadable, not safetensors, a mask missing, a tensor
/// that is not a prunable weight of the model, a mask whose shape is not its weight's, whose
/// dtype is not u8 or bool, or with a value other than 0 and 1.
pub fn read_masks(path: &Path, model: &Model) -> Result<Vec<Vec<bool>>, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    let format =
        |e: safetensors::SafeTensorError| ModelError::Format { path: path.to_path_buf(), message: e.to_string() };
    let tensors = SafeTensors::deserialize(&bytes).map_err(format)?;
    let arch = &model.spec().name;
    let mut names = tensors.names();
    names.sort();
    if let Some(unknown) = names.iter().find(|name| !model.prunable().any(|(p, _)| &p.name == *name)) {
        return Err(ModelError::UnexpectedTensor {
            path: path.to_path_buf(),
            arch: arch.clone(),
            name: unknown.to_string(),
            expected: "a prunable weight".into(),
        });
    }
    model
        .prunable()
        .map(|(p, _)| {
            let mismatch = |found: String, expected: String| ModelError::TensorMismatch {
                path: path.to_path_buf(),
                arch: arch.clone(),
                name: p.name.clone(),
                found,
                expected,
            };
            let view = tensors.tensor(&p.name).map_err(|_| ModelError::MissingTensor {
                path: path.to_path_buf(),
                arch: arch.clone(),
                name: p.name.clone(),
                shape: p.shape.clone(),
            })?;
            if view.shape() != p.shape.as_slice() {
                return Err(mismatch(
                    format!("a mask of shape {:?}", view.shape()),
                    format!("the weight's shape {:?}", p.shape),
                ));
            }
            if !matches!(view.dtype(), Dtype::U8 | Dtype::BOOL) {
                return Err(mismatch(format!("dtype {:?}", view.dtype()), "a u8 or bool mask (1 = kept)".into()));
            }
            if let Some((at, value)) = view.data().iter().enumerate().find(|(_, b)| **b > 1) {
                return Err(mismatch(
                    format!("the value {value} at flat index {at}"),
                    "0 (pruned) or 1 (kept) in every entry".into(),
                ));
            }
            Ok(view.data().iter().map(|&b| b == 1).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encode_u8;

    fn model() -> Model {
        Model::zeros(crate::preset("cnn-digits").unwrap()).unwrap()
    }

    /// A mask per prunable weight, every other weight kept.
    fn masks(model: &Model) -> Vec<(String, Vec<usize>, Vec<u8>)> {
        model
            .prunable()
            .map(|(p, w)| (p.name.clone(), p.shape.clone(), (0..w.len()).map(|i| (i % 2) as u8).collect()))
            .collect()
    }

    fn error(path: &Path, entries: &[(String, Vec<usize>, Vec<u8>)]) -> String {
        std::fs::write(path, encode_u8(entries)).unwrap();
        match read_masks(path, &model()) {
            Ok(_) => panic!("masks {:?} were accepted", entries.iter().map(|e| (&e.0, &e.1)).collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn masks_round_trip_in_prunable_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.masks.safetensors");
        let model = model();
        std::fs::write(&path, encode_u8(&masks(&model))).unwrap();
        let keep = read_masks(&path, &model).unwrap();
        assert_eq!(keep.len(), model.prunable().count());
        assert!(keep.iter().all(|k| !k[0] && k[1]));
    }

    #[test]
    fn a_flat_mask_is_refused_naming_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flat.masks.safetensors");
        let mut entries = masks(&model());
        entries[0].1 = vec![entries[0].2.len()];
        let err = error(&path, &entries);
        assert!(err.contains("flat.masks.safetensors") && err.contains("'0.weight'"), "{err}");
        assert!(err.contains(&format!("shape [{}]", entries[0].2.len())), "{err}");
    }

    #[test]
    fn a_mask_value_other_than_0_and_1_is_refused_naming_file_tensor_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byte.masks.safetensors");
        for value in [2u8, 255] {
            let mut entries = masks(&model());
            entries[1].2[3] = value;
            let err = error(&path, &entries);
            assert!(
                err.contains("byte.masks.safetensors") && err.contains(&format!("the value {value} at flat index 3")),
                "{err}"
            );
            assert!(err.contains("0 (pruned) or 1 (kept)"), "{err}");
        }
    }

    #[test]
    fn a_mask_for_an_unknown_tensor_is_refused_naming_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.masks.safetensors");
        let mut entries = masks(&model());
        entries.push(("99.weight".into(), vec![2], vec![1, 1]));
        let err = error(&path, &entries);
        assert!(err.contains("other.masks.safetensors") && err.contains("'99.weight'"), "{err}");
        // A bias is not prunable either.
        let mut entries = masks(&model());
        entries.push(("0.bias".into(), vec![8], vec![1; 8]));
        let err = error(&path, &entries);
        assert!(err.contains("'0.bias'") && err.contains("not a prunable weight"), "{err}");
    }

    #[test]
    fn a_missing_mask_and_a_float_mask_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.masks.safetensors");
        let entries = masks(&model());
        let err = error(&path, &entries[1..]);
        assert!(err.contains("m.masks.safetensors") && err.contains("'0.weight'") && err.contains("missing"), "{err}");
        let model = model();
        let floats: Vec<(String, Vec<usize>, &[f32])> =
            model.prunable().map(|(p, w)| (p.name.clone(), p.shape.clone(), w)).collect();
        std::fs::write(&path, crate::model::encode_f32(&floats, None)).unwrap();
        let err = read_masks(&path, &model).unwrap_err().to_string();
        assert!(err.contains("dtype F32") && err.contains("u8 or bool"), "{err}");
    }

    /// Bad input, everywhere: mutants of a masks file never panic the reader, and every
    /// refusal names the file.
    #[test]
    fn property_mutated_masks_files_never_panic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::ArchSpec::from_json(
            r#"{"name":"tiny","input":[1,4,4],"classes":2,"layers":[
                {"type":"conv2d","out_channels":2,"kernel":3},{"type":"flatten"},{"type":"linear","out_features":2}]}"#,
        )
        .unwrap();
        let model = Model::zeros(spec).unwrap();
        let valid = encode_u8(&masks(&model));
        let path = dir.path().join("m.masks.safetensors");
        let tally = crate::mutation::check_reader("masks", &valid, &path, 2000, 1, |p| read_masks(p, &model));
        assert!(tally.refused > 1000, "{tally:?}");
    }
}

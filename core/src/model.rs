//! A model: an architecture plus its named parameter tensors, stored as safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::arch::{ArchError, ArchSpec, ParamSpec};

/// Metadata key under which the architecture JSON is stored in a safetensors file.
pub const ARCH_METADATA_KEY: &str = "hyperprune.arch";

/// What can go wrong loading or saving a model or its masks. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a readable safetensors file.
    #[error("{}: not a valid safetensors file ({message}); was it truncated or written by another tool?", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// No architecture was stored in or given with the file.
    #[error("{}: no architecture found: the file has no '{ARCH_METADATA_KEY}' metadata and no spec JSON beside it ({}); pass --arch PRESET|SPEC.json", path.display(), beside.display())]
    NoArch {
        /// The model file.
        path: PathBuf,
        /// Where a spec beside the file was looked for.
        beside: PathBuf,
    },
    /// The architecture is invalid.
    #[error("{}: {source}", path.display())]
    Arch {
        /// The file the spec came from.
        path: PathBuf,
        /// What is wrong with it.
        source: ArchError,
    },
    /// A tensor the architecture needs is absent.
    #[error("{}: tensor '{name}' (shape {shape:?}) required by architecture '{arch}' is missing", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The architecture name.
        arch: String,
        /// Missing tensor.
        name: String,
        /// Its expected shape.
        shape: Vec<usize>,
    },
    /// A tensor's shape or dtype does not fit the architecture.
    #[error("{}: tensor '{name}' has {found}, but architecture '{arch}' expects {expected}", path.display())]
    TensorMismatch {
        /// The file.
        path: PathBuf,
        /// The architecture name.
        arch: String,
        /// The tensor.
        name: String,
        /// What the file holds.
        found: String,
        /// What the spec needs.
        expected: String,
    },
    /// The file holds a tensor that the architecture does not know.
    #[error("{}: tensor '{name}' is not {expected} of architecture '{arch}'; was the file written for another model?", path.display())]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The architecture name.
        arch: String,
        /// The unknown tensor.
        name: String,
        /// What the tensors of the file must be, e.g. "a prunable weight".
        expected: String,
    },
    /// A tensor holds NaN or infinite values.
    #[error("{}: tensor '{name}' holds non-finite values", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
}

/// A network's architecture and parameters, in [`ArchSpec::params`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    spec: ArchSpec,
    params: Vec<ParamSpec>,
    values: Vec<Vec<f32>>,
}

impl Model {
    /// A model with the given parameter values, in [`ArchSpec::params`] order.
    ///
    /// # Errors
    /// [`ArchError::Invalid`] when the spec is invalid or a value has the wrong length.
    pub fn new(spec: ArchSpec, values: Vec<Vec<f32>>) -> Result<Model, ArchError> {
        let params = spec.params()?;
        if params.len() != values.len() {
            return Err(ArchError::Invalid {
                arch: spec.name.clone(),
                layer: None,
                message: format!("{} tensors given, {} expected", values.len(), params.len()),
            });
        }
        for (p, v) in params.iter().zip(&values) {
            if p.numel() != v.len() {
                return Err(ArchError::Invalid {
                    arch: spec.name.clone(),
                    layer: Some(p.layer),
                    message: format!("tensor '{}' has {} values, {} expected", p.name, v.len(), p.numel()),
                });
            }
        }
        Ok(Model { spec, params, values })
    }

    /// A model whose parameters are all zero.
    ///
    /// # Errors
    /// [`ArchError`] when the spec is invalid.
    pub fn zeros(spec: ArchSpec) -> Result<Model, ArchError> {
        let values = spec.params()?.iter().map(|p| vec![0.0; p.numel()]).collect();
        Model::new(spec, values)
    }

    /// The architecture.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// The parameter descriptions, in storage order.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// The parameter values, in [`Model::params`] order.
    pub fn values(&self) -> &[Vec<f32>] {
        &self.values
    }

    /// Mutable parameter values, in [`Model::params`] order.
    pub fn values_mut(&mut self) -> &mut [Vec<f32>] {
        &mut self.values
    }

    /// The prunable weights: `(spec, values)` for every conv and linear weight, in order.
    pub fn prunable(&self) -> impl Iterator<Item = (&ParamSpec, &[f32])> {
        self.params.iter().zip(&self.values).filter(|(p, _)| p.prunable).map(|(p, v)| (p, v.as_slice()))
    }

    /// Mutable prunable weights, in order.
    pub fn prunable_mut(&mut self) -> impl Iterator<Item = (&ParamSpec, &mut Vec<f32>)> {
        self.params.iter().zip(self.values.iter_mut()).filter(|(p, _)| p.prunable)
    }

    /// Number of prunable weights.
    pub fn prunable_count(&self) -> usize {
        self.prunable().map(|(_, v)| v.len()).sum()
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.values.iter().map(Vec::len).sum()
    }

    /// Zeroes every pruned weight: `keep[l][i] == false` zeroes weight `i` of prunable layer
    /// `l`. Optionally replaces the kept weights by `new_weights[l]` first.
    ///
    /// # Errors
    /// A message naming the layer when a mask or weight vector has the wrong length or the
    /// number of layers differs.
    pub fn apply_masks(&mut self, keep: &[Vec<bool>], new_weights: Option<&[Option<Vec<f32>>]>) -> Result<(), String> {
        let layers = self.params.iter().filter(|p| p.prunable).count();
        if keep.len() != layers {
            return Err(format!("{} masks given for {} prunable layers", keep.len(), layers));
        }
        for (l, (p, w)) in self.prunable_mut().enumerate() {
            if keep[l].len() != w.len() {
                return Err(format!(
                    "mask of layer '{}' has {} entries, the layer has {} weights",
                    p.name,
                    keep[l].len(),
                    w.len()
                ));
            }
            if let Some(Some(new)) = new_weights.and_then(|n| n.get(l)) {
                if new.len() != w.len() {
                    return Err(format!(
                        "new weights of layer '{}' have {} entries, the layer has {} weights",
                        p.name,
                        new.len(),
                        w.len()
                    ));
                }
                w.copy_from_slice(new);
            }
            for (x, &k) in w.iter_mut().zip(&keep[l]) {
                if !k {
                    *x = 0.0;
                }
            }
        }
        Ok(())
    }

    /// The values of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.params.iter().position(|p| p.name == name).map(|i| self.values[i].as_slice())
    }

    /// Loads a model from a safetensors file.
    ///
    /// The architecture comes from `arch` when given, else from the file's
    /// `hyperprune.arch` metadata, else from a spec JSON beside the file (`model.arch.json`
    /// or `model.json` for `model.safetensors`). Tensors may be f32, f64, f16 or bf16; extra
    /// tensors (e.g. PyTorch buffers) are ignored.
    ///
    /// # Errors
    /// A [`ModelError`] naming the file: unreadable, not safetensors, no or invalid
    /// architecture, a missing or mis-shaped tensor, non-finite values.
    pub fn load(path: &Path, arch: Option<&ArchSpec>) -> Result<Model, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        Model::from_bytes(path, &bytes, arch)
    }

    /// Parses safetensors bytes; `path` is only used in error messages and to find a spec
    /// beside the file.
    ///
    /// # Errors
    /// As [`Model::load`].
    pub fn from_bytes(path: &Path, bytes: &[u8], arch: Option<&ArchSpec>) -> Result<Model, ModelError> {
        let format =
            |e: safetensors::SafeTensorError| ModelError::Format { path: path.to_path_buf(), message: e.to_string() };
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(format)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(format)?;
        let spec = match arch {
            Some(spec) => spec.clone(),
            None => spec_for(path, metadata.metadata().as_ref().and_then(|m| m.get(ARCH_METADATA_KEY)))?,
        };
        let params = spec.params().map_err(|source| ModelError::Arch { path: path.to_path_buf(), source })?;
        let mut values = Vec::with_capacity(params.len());
        for p in &params {
            let view = tensors.tensor(&p.name).map_err(|_| ModelError::MissingTensor {
                path: path.to_path_buf(),
                arch: spec.name.clone(),
                name: p.name.clone(),
                shape: p.shape.clone(),
            })?;
            if view.shape() != p.shape.as_slice() {
                return Err(ModelError::TensorMismatch {
                    path: path.to_path_buf(),
                    arch: spec.name.clone(),
                    name: p.name.clone(),
                    found: format!("shape {:?}", view.shape()),
                    expected: format!("shape {:?}", p.shape),
                });
            }
            let v = decode(&view).ok_or_else(|| ModelError::TensorMismatch {
                path: path.to_path_buf(),
                arch: spec.name.clone(),
                name: p.name.clone(),
                found: format!("dtype {:?}", view.dtype()),
                expected: "dtype F32, F64, F16 or BF16".into(),
            })?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::NonFinite { path: path.to_path_buf(), name: p.name.clone() });
            }
            values.push(v);
        }
        Ok(Model { spec, params, values })
    }

    /// The model as safetensors bytes (f32, PyTorch layout), with the architecture in the
    /// metadata, plus any `extra` tensors (e.g. masks) given as `(name, shape, values)`.
    pub fn to_bytes(&self, extra: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let mut entries: Vec<(String, Vec<usize>, &[f32])> = self
            .params
            .iter()
            .zip(&self.values)
            .map(|(p, v)| (p.name.clone(), p.shape.clone(), v.as_slice()))
            .collect();
        entries.extend(extra.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())));
        let metadata = HashMap::from([(ARCH_METADATA_KEY.to_string(), self.spec.to_json())]);
        encode_f32(&entries, Some(metadata))
    }

    /// Writes the model atomically: to a temporary file beside `path`, then renamed, so a
    /// crash never leaves a half-written model under the final name.
    ///
    /// # Errors
    /// [`ModelError::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        write_atomic(path, &self.to_bytes(&[]))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
///
/// # Errors
/// [`ModelError::Io`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let io = |source| ModelError::Io { path: path.to_path_buf(), source };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        // A full disk fails the write part-way: the partial temporary file must not stay.
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Serialises f32 tensors `(name, shape, values)` as safetensors bytes.
pub fn encode_f32(entries: &[(String, Vec<usize>, &[f32])], metadata: Option<HashMap<String, String>>) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> =
        entries.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (name.clone(), TensorView::new(Dtype::F32, shape.clone(), b).expect("shape matches the value count"))
        })
        .collect();
    safetensors::tensor::serialize(views, metadata).expect("in-memory serialisation of f32 tensors cannot fail")
}

/// Serialises u8 tensors `(name, shape, values)` (e.g. 0/1 masks) as safetensors bytes.
pub fn encode_u8(entries: &[(String, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(name, shape, v)| {
            (name.clone(), TensorView::new(Dtype::U8, shape.clone(), v).expect("shape matches the value count"))
        })
        .collect();
    safetensors::tensor::serialize(views, None).expect("in-memory serialisation of u8 tensors cannot fail")
}

fn spec_for(path: &Path, stored: Option<&String>) -> Result<ArchSpec, ModelError> {
    if let Some(json) = stored {
        return ArchSpec::from_json(json).map_err(|source| ModelError::Arch { path: path.to_path_buf(), source });
    }
    let beside = [path.with_extension("arch.json"), path.with_extension("json")];
    for candidate in &beside {
        if candidate.is_file() {
            // The spec's own error names the spec file; this one adds the model file.
            return ArchSpec::read(candidate).map_err(|source| ModelError::Arch { path: path.to_path_buf(), source });
        }
    }
    Err(ModelError::NoArch { path: path.to_path_buf(), beside: beside[0].clone() })
}

fn decode(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => {
            data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32).collect()
        }
        Dtype::F16 => data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        Dtype::BF16 => {
            data.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
        }
        _ => return None,
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac * 2^-24.
            let v = frac as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;

    fn counting_model() -> Model {
        let spec = preset("cnn-digits").unwrap();
        let values = spec
            .params()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, p)| (0..p.numel()).map(|j| (i * 1000 + j) as f32 * 1e-3).collect())
            .collect();
        Model::new(spec, values).unwrap()
    }

    #[test]
    fn safetensors_round_trip_keeps_spec_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let model = counting_model();
        model.save(&path).unwrap();
        assert_eq!(Model::load(&path, None).unwrap(), model);
    }

    #[test]
    fn truncated_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.safetensors");
        let bytes = counting_model().to_bytes(&[]);
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = Model::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("cut.safetensors") && err.contains("not a valid safetensors"), "{err}");
    }

    #[test]
    fn wrong_shape_names_tensor_and_both_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        counting_model().save(&path).unwrap();
        let err = Model::load(&path, Some(&preset("cnn-s").unwrap())).unwrap_err().to_string();
        assert!(err.contains("'0.weight'") && err.contains("[8, 1, 5, 5]") && err.contains("[8, 1, 3, 3]"), "{err}");
    }

    #[test]
    fn pytorch_file_with_spec_beside_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torch.safetensors");
        let model = counting_model();
        let entries: Vec<(String, Vec<usize>, &[f32])> = model
            .params()
            .iter()
            .zip(model.values())
            .map(|(p, v)| (p.name.clone(), p.shape.clone(), v.as_slice()))
            .collect();
        std::fs::write(&path, encode_f32(&entries, None)).unwrap();
        let err = Model::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("no architecture found"), "{err}");
        std::fs::write(dir.path().join("torch.arch.json"), model.spec().to_json()).unwrap();
        assert_eq!(Model::load(&path, None).unwrap(), model);
    }

    /// A model small enough that most mutations land in the safetensors header or the
    /// architecture metadata rather than in the values.
    fn tiny_model() -> Model {
        let spec = ArchSpec::from_json(
            r#"{"name":"tiny","input":[1,4,4],"classes":2,"layers":[
                {"type":"conv2d","out_channels":2,"kernel":3},{"type":"relu"},{"type":"flatten"},
                {"type":"linear","out_features":2}]}"#,
        )
        .unwrap();
        let values = spec.params().unwrap().iter().map(|p| (0..p.numel()).map(|j| j as f32 * 0.25).collect()).collect();
        Model::new(spec, values).unwrap()
    }

    /// Bad input, everywhere: mutants of a model file never panic the loader, and every
    /// refusal names the file, with the architecture from the file or given.
    #[test]
    fn property_mutated_model_files_never_panic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let model = tiny_model();
        let valid = model.to_bytes(&[]);
        let stored =
            crate::mutation::check_reader("model (stored arch)", &valid, &path, 2000, 1, |p| Model::load(p, None));
        let spec = model.spec().clone();
        let given = crate::mutation::check_reader("model (given arch)", &valid, &path, 1000, 2, |p| {
            Model::load(p, Some(&spec))
        });
        assert!(stored.refused > 1000 && given.refused > 300, "{stored:?} {given:?}");
    }

    #[test]
    fn f16_decoding() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    #[cfg(unix)]
    fn a_write_that_fails_part_way_leaves_no_temporary_file() {
        // /dev/full takes the open and fails the write (ENOSPC), as a full disk does: a
        // symlink at the temporary file's name sends write_atomic's write there.
        if !Path::new("/dev/full").exists() {
            eprintln!("skipped: no /dev/full on this machine");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparsity.svg");
        let tmp = dir.path().join(format!(".sparsity.svg.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let e = write_atomic(&path, b"<svg/>").unwrap_err();
        assert!(e.to_string().contains("sparsity.svg"), "{e}");
        assert!(std::fs::symlink_metadata(&tmp).is_err(), "the temporary file is removed");
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

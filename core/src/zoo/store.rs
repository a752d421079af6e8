//! A zoo on disk: `zoo.json` plus `members/NNNN.safetensors`, both written atomically.

use std::path::{Path, PathBuf};

use super::ZooError;
use super::meta::{MemberInfo, Split, ZOO_FORMAT, ZooMeta};
use crate::model::{Model, write_atomic};

/// Name of the metadata file in a zoo folder.
pub const ZOO_FILE: &str = "zoo.json";

/// An opened zoo.
#[derive(Debug, Clone)]
pub struct Zoo {
    dir: PathBuf,
    meta: ZooMeta,
}

impl Zoo {
    /// Opens the zoo in `dir`.
    ///
    /// # Errors
    /// [`ZooError::Io`] / [`ZooError::Format`] naming `zoo.json`.
    pub fn open(dir: &Path) -> Result<Zoo, ZooError> {
        let path = dir.join(ZOO_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ZooError::Io { path: path.clone(), source })?;
        let meta: ZooMeta =
            serde_json::from_str(&text).map_err(|e| ZooError::Format { path: path.clone(), message: e.to_string() })?;
        if meta.format != ZOO_FORMAT {
            return Err(ZooError::Format {
                path,
                message: format!("zoo format {} is not supported (expected {ZOO_FORMAT})", meta.format),
            });
        }
        Ok(Zoo { dir: dir.to_path_buf(), meta })
    }

    /// A zoo backed by `dir` with the given metadata (not yet written).
    pub fn new(dir: &Path, meta: ZooMeta) -> Zoo {
        Zoo { dir: dir.to_path_buf(), meta }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata.
    pub fn meta(&self) -> &ZooMeta {
        &self.meta
    }

    /// Mutable metadata (for the trainer).
    pub(crate) fn meta_mut(&mut self) -> &mut ZooMeta {
        &mut self.meta
    }

    /// The trained members of `split`, in id order.
    pub fn members(&self, split: Split) -> Vec<&MemberInfo> {
        self.meta.members.iter().filter(|m| m.is_trained() && (split == Split::All || m.split == split)).collect()
    }

    /// Loads a member's weights.
    ///
    /// # Errors
    /// [`ZooError::Model`] naming the member file.
    pub fn load(&self, member: &MemberInfo) -> Result<Model, ZooError> {
        Model::load(&self.dir.join(&member.file), Some(&member.arch)).map_err(ZooError::Model)
    }

    /// Writes a member file atomically.
    ///
    /// # Errors
    /// [`ZooError::Model`] naming the file.
    pub(crate) fn save_member(&self, member: &MemberInfo, model: &Model) -> Result<(), ZooError> {
        let path = self.dir.join(&member.file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ZooError::Io { path: parent.to_path_buf(), source })?;
        }
        model.save(&path).map_err(ZooError::Model)
    }

    /// Writes `zoo.json` atomically.
    ///
    /// # Errors
    /// [`ZooError::Io`] naming the file.
    pub fn save_meta(&self) -> Result<(), ZooError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| ZooError::Io { path: self.dir.clone(), source })?;
        let text = serde_json::to_string_pretty(&self.meta).expect("zoo metadata serialises");
        write_atomic(&self.dir.join(ZOO_FILE), text.as_bytes()).map_err(ZooError::Model)
    }

    /// Zoos found directly under `root` (folders holding a `zoo.json`), sorted by path.
    pub fn list(root: &Path) -> Vec<Result<Zoo, ZooError>> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join(ZOO_FILE).is_file()).collect();
        dirs.sort();
        dirs.iter().map(|d| Zoo::open(d)).collect()
    }
}

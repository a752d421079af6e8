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
    /// [`ZooError::Io`] / [`ZooError::Format`] naming `zoo.json`; a format error also names
    /// the member and the field at fault (an invalid architecture, a duplicate id, a file
    /// outside the folder, an accuracy outside [0, 1]).
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
        meta.check().map_err(|message| ZooError::Format { path, message })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Optimizer;
    use crate::zoo::{ZooSettings, plan};

    /// A planned zoo of three cnn-digits members, as if trained.
    fn trained_meta() -> ZooMeta {
        let settings = ZooSettings {
            epochs: 1,
            batch_size: 32,
            optimizer: Optimizer::Adam,
            lr: 1e-3,
            vary: vec!["seed".into()],
            seed: 3,
            split: [0.4, 0.3, 0.3],
            shared_data_order: false,
        };
        let mut meta = plan("t", &crate::preset("cnn-digits").unwrap(), "digits", "cpu", settings, 3).unwrap();
        for (i, m) in meta.members.iter_mut().enumerate() {
            m.train_accuracy = Some(0.9);
            m.test_accuracy = Some(0.8 + 0.01 * i as f64);
            m.test_loss = Some(0.5);
        }
        meta
    }

    /// Writes `meta` as the zoo.json of `dir` and returns the error of opening it.
    fn open_error(dir: &Path, meta: ZooMeta) -> String {
        Zoo::new(dir, meta).save_meta().unwrap();
        match Zoo::open(dir) {
            Ok(_) => panic!("the zoo in {} opened but should have been refused", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_valid_zoo_opens() {
        let dir = tempfile::tempdir().unwrap();
        Zoo::new(dir.path(), trained_meta()).save_meta().unwrap();
        assert_eq!(Zoo::open(dir.path()).unwrap().meta(), &trained_meta());
    }

    #[test]
    fn accuracies_outside_the_unit_interval_are_refused_naming_file_member_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = trained_meta();
        meta.members[1].test_accuracy = Some(1.5);
        let err = open_error(dir.path(), meta);
        assert!(
            err.contains("zoo.json") && err.contains("member '0001'") && err.contains("'test_accuracy' is 1.5"),
            "{err}"
        );
        let mut meta = trained_meta();
        meta.members[2].train_accuracy = Some(-0.1);
        let err = open_error(dir.path(), meta);
        assert!(err.contains("zoo.json") && err.contains("member '0002'") && err.contains("'train_accuracy'"), "{err}");
    }

    #[test]
    fn duplicate_member_ids_are_refused_naming_file_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = trained_meta();
        meta.members[2].id = "0000".into();
        let err = open_error(dir.path(), meta);
        assert!(err.contains("zoo.json") && err.contains("member id '0000' appears twice"), "{err}");
    }

    #[test]
    fn invalid_member_architectures_and_files_outside_the_zoo_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = trained_meta();
        meta.members[0].arch.classes = 7;
        let err = open_error(dir.path(), meta);
        assert!(err.contains("zoo.json") && err.contains("member '0000'") && err.contains("field 'arch'"), "{err}");
        for file in ["/etc/passwd", "../elsewhere.safetensors", ""] {
            let mut meta = trained_meta();
            meta.members[1].file = file.into();
            let err = open_error(dir.path(), meta);
            assert!(err.contains("member '0001'") && err.contains("field 'file'"), "{err}");
        }
    }

    /// Bad input, everywhere: mutants of a zoo.json never panic `Zoo::open`, and every
    /// refusal names the file.
    #[test]
    fn property_mutated_zoo_files_never_panic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let zoo = Zoo::new(dir.path(), trained_meta());
        zoo.save_meta().unwrap();
        let valid = std::fs::read(dir.path().join(ZOO_FILE)).unwrap();
        let tally = crate::mutation::check_reader("zoo.json", &valid, &dir.path().join(ZOO_FILE), 2000, 1, |p| {
            Zoo::open(p.parent().expect("zoo.json has a folder"))
        });
        assert!(tally.refused > 1000, "{tally:?}");
    }
}

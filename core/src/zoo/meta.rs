//! `zoo.json`: what a zoo is, how its members were trained, and how they are split.

use serde::{Deserialize, Serialize};

use crate::arch::{Activation, ArchSpec};
use crate::engine::{Init, Optimizer};

/// Version of the `zoo.json` layout.
pub const ZOO_FORMAT: u32 = 1;

/// Which part of a zoo: members are split by member, never by weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Members learned pruners fit on.
    Train,
    /// Members for model selection.
    Val,
    /// Members every reported number comes from.
    Test,
    /// Every member.
    All,
}

impl std::str::FromStr for Split {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            "all" => Ok(Split::All),
            other => Err(format!("unknown split '{other}', expected train, val, test or all")),
        }
    }
}

/// The hyperparameters of one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparams {
    /// Activation of every hidden layer.
    pub activation: Activation,
    /// Weight initialisation.
    pub init: Init,
    /// Learning rate.
    pub lr: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Dropout probability before hidden linear layers.
    pub dropout: f32,
    /// Seed of the initialisation.
    pub seed: u64,
    /// Seed of the mini-batch order and the dropout masks (see
    /// [`ZooSettings::shared_data_order`]).
    pub data_seed: u64,
}

/// One member's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Four-digit id, e.g. `0007`.
    pub id: String,
    /// File, relative to the zoo folder.
    pub file: String,
    /// Split the member belongs to.
    pub split: Split,
    /// How it was trained.
    pub hyperparams: Hyperparams,
    /// The member's own architecture (the zoo's with its activation and dropout).
    pub arch: ArchSpec,
    /// Dense accuracy on the dataset's train split (None until trained).
    pub train_accuracy: Option<f64>,
    /// Dense accuracy on the dataset's test split (None until trained).
    pub test_accuracy: Option<f64>,
    /// Dense mean cross-entropy on the test split.
    pub test_loss: Option<f64>,
}

impl MemberInfo {
    /// Whether the member finished training.
    pub fn is_trained(&self) -> bool {
        self.test_accuracy.is_some()
    }
}

/// The settings shared by every member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooSettings {
    /// Epochs per member.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Optimiser.
    pub optimizer: Optimizer,
    /// Base learning rate (varied around when `lr` is in `vary`).
    pub lr: f32,
    /// Which hyperparameters vary across members.
    pub vary: Vec<String>,
    /// Zoo seed: member hyperparameters, member seeds and the split derive from it.
    pub seed: u64,
    /// Fractions of members in train / val / test.
    pub split: [f64; 3],
    /// When true, every member sees the mini-batches in the same order and draws the same
    /// dropout masks (the zoo seed's), and members differ only by initialisation and
    /// hyperparameters; the CPU engine then also shares the per-image work of a batch.
    /// When false (the default), a member's seed drives its data order and dropout too.
    #[serde(default)]
    pub shared_data_order: bool,
}

/// The contents of `zoo.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooMeta {
    /// Layout version ([`ZOO_FORMAT`]).
    pub format: u32,
    /// Zoo name (the folder name by default).
    pub name: String,
    /// Base architecture.
    pub arch: ArchSpec,
    /// Dataset the members were trained on.
    pub dataset: String,
    /// Engine that trained the members.
    pub engine: String,
    /// Shared settings.
    pub settings: ZooSettings,
    /// Every member, trained or not yet.
    pub members: Vec<MemberInfo>,
}

impl ZooMeta {
    /// Checks what serde cannot: valid architectures, unique member ids, member files inside
    /// the zoo folder, accuracies that are fractions and losses that are not negative.
    ///
    /// # Errors
    /// A message naming the member and the field at fault (the caller adds the file).
    pub(crate) fn check(&self) -> Result<(), String> {
        self.arch.params().map_err(|e| format!("field 'arch': {e}"))?;
        self.settings.check().map_err(|e| format!("field 'settings': {e}"))?;
        let mut ids = std::collections::HashSet::new();
        for m in &self.members {
            if !ids.insert(m.id.as_str()) {
                return Err(format!("member id '{}' appears twice; every member needs its own id", m.id));
            }
            m.check().map_err(|e| format!("member '{}': {e}", m.id))?;
        }
        Ok(())
    }
}

impl ZooSettings {
    /// Checks the settings a trainer relies on.
    ///
    /// # Errors
    /// A message naming the setting, its value and the fix.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch size must be at least 1, got 0; pass --batch-size N with N >= 1".into());
        }
        if self.epochs == 0 {
            return Err("epochs must be at least 1, got 0; pass --epochs N with N >= 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("learning rate must be a finite number above 0, got {}; pass --lr", self.lr));
        }
        if let crate::engine::Optimizer::Sgd { momentum } = self.optimizer
            && !(0.0..1.0).contains(&momentum)
        {
            return Err(format!("momentum must be in [0, 1), got {momentum}; pass --momentum"));
        }
        let sum: f64 = self.split.iter().sum();
        if !((sum - 1.0).abs() <= 1e-6 && self.split.iter().all(|f| (0.0..=1.0).contains(f))) {
            return Err(format!(
                "split fractions must be in [0, 1] and sum to 1, got {:?}; pass --split TRAIN,VAL,TEST",
                self.split
            ));
        }
        Ok(())
    }
}

impl MemberInfo {
    fn check(&self) -> Result<(), String> {
        self.arch.params().map_err(|e| format!("field 'arch': {e}"))?;
        let file = std::path::Path::new(&self.file);
        let inside = file.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if self.file.is_empty() || !inside {
            return Err(format!(
                "field 'file' is '{}', expected a relative path inside the zoo folder such as 'members/{}.safetensors'",
                self.file, self.id
            ));
        }
        for (field, value) in [("train_accuracy", self.train_accuracy), ("test_accuracy", self.test_accuracy)] {
            if let Some(a) = value.filter(|a| !(0.0..=1.0).contains(a)) {
                return Err(format!("field '{field}' is {a}, expected a fraction in [0, 1]"));
            }
        }
        if let Some(loss) = self.test_loss.filter(|l| *l < 0.0) {
            return Err(format!("field 'test_loss' is {loss}, expected a non-negative cross-entropy"));
        }
        Ok(())
    }
}

//! Zero-copy conversion between core's [`Model`] and the SDK's borrowed `ModelRef`.

use hyperprune_sdk::abi_stable::std_types::{RSlice, RStr};
use hyperprune_sdk::{LayerKind, LayerRef, ModelRef, TensorRef};

use crate::arch::{ArchSpec, ParamLayerKind};
use crate::model::Model;

/// The storage a `ModelRef` borrows besides the weights themselves: the architecture JSON
/// and the shapes as `u64`. Build once per model, then call [`LayerViews::with_ref`].
pub struct LayerViews<'m> {
    model: &'m Model,
    arch_json: String,
    shapes: Vec<Vec<u64>>,
}

impl<'m> LayerViews<'m> {
    /// Prepares views of `model`.
    pub fn new(model: &'m Model) -> LayerViews<'m> {
        LayerViews {
            model,
            arch_json: model.spec().to_json(),
            shapes: model.params().iter().map(|p| p.shape.iter().map(|&d| d as u64).collect()).collect(),
        }
    }

    /// Runs `f` with a `ModelRef` whose weight slices point into the model's own buffers.
    pub fn with_ref<R>(&self, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
        let (layers, others) = self.parts();
        f(self.view(&layers, &others))
    }

    /// A `ModelRef` over parts from [`LayerViews::parts`]; for holding several views at once.
    pub fn view<'a>(&'a self, layers: &'a [LayerRef<'a>], others: &'a [TensorRef<'a>]) -> ModelRef<'a> {
        ModelRef {
            arch_json: RStr::from_str(&self.arch_json),
            layers: RSlice::from_slice(layers),
            others: RSlice::from_slice(others),
        }
    }

    /// The borrowed layer and tensor views of the model.
    pub fn parts(&self) -> (Vec<LayerRef<'_>>, Vec<TensorRef<'_>>) {
        let mut layers = Vec::new();
        let mut others = Vec::new();
        for ((p, v), shape) in self.model.params().iter().zip(self.model.values()).zip(&self.shapes) {
            if p.prunable {
                layers.push(LayerRef {
                    name: RStr::from_str(&p.name),
                    kind: match p.kind {
                        ParamLayerKind::Conv2d => LayerKind::Conv2d,
                        ParamLayerKind::Linear => LayerKind::Linear,
                    },
                    shape: RSlice::from_slice(shape),
                    weights: RSlice::from_slice(v),
                });
            } else {
                others.push(TensorRef {
                    name: RStr::from_str(&p.name),
                    shape: RSlice::from_slice(shape),
                    values: RSlice::from_slice(v),
                });
            }
        }
        (layers, others)
    }
}

/// Runs `f` with a zero-copy `ModelRef` of `model`.
pub fn model_ref<R>(model: &Model, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
    LayerViews::new(model).with_ref(f)
}

/// What is wrong with a `ModelRef` a plugin handed back.
#[derive(Debug, thiserror::Error)]
#[error("model passed by the plugin is not usable: {0}")]
pub struct ViewError(pub String);

impl Model {
    /// Builds an owned model from a plugin's `ModelRef` (architecture JSON, prunable layers
    /// and other tensors), checking every name and length against the architecture.
    ///
    /// # Errors
    /// [`ViewError`] naming the tensor that is missing or of the wrong length.
    pub fn from_ref(view: &ModelRef<'_>) -> Result<Model, ViewError> {
        let spec = ArchSpec::from_json(view.arch_json.as_str()).map_err(|e| ViewError(e.to_string()))?;
        let params = spec.params().map_err(|e| ViewError(e.to_string()))?;
        let mut values = Vec::with_capacity(params.len());
        for p in &params {
            let found = if p.prunable {
                view.layers.iter().find(|l| l.name.as_str() == p.name).map(|l| l.weights.as_slice())
            } else {
                view.others.iter().find(|t| t.name.as_str() == p.name).map(|t| t.values.as_slice())
            };
            let v = found.ok_or_else(|| ViewError(format!("tensor '{}' is missing", p.name)))?;
            if v.len() != p.numel() {
                return Err(ViewError(format!("tensor '{}' has {} values, {} expected", p.name, v.len(), p.numel())));
            }
            values.push(v.to_vec());
        }
        Model::new(spec, values).map_err(|e| ViewError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ref_borrows_and_round_trips() {
        let spec = crate::preset("cnn-digits").unwrap();
        let values = spec.params().unwrap().iter().map(|p| (0..p.numel()).map(|i| i as f32).collect()).collect();
        let model = Model::new(spec, values).unwrap();
        let first_ptr = model.values()[0].as_ptr();
        model_ref(&model, |view| {
            assert_eq!(view.layers.len(), 4);
            assert_eq!(view.others.len(), 4);
            assert_eq!(view.layers[0].weights.as_ptr(), first_ptr, "the view must borrow, not copy");
            assert_eq!(Model::from_ref(&view).unwrap(), model);
        });
    }
}

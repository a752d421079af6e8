//! # hyperprune-core
//!
//! Everything the host needs to run pruning experiments that is not the plugin ABI:
//! architectures ([`ArchSpec`], its lowering to a typed graph, and the built-in presets),
//! models stored as safetensors ([`Model`]), the [`engine::Engine`] trait, datasets, model
//! zoos and metrics. The engines that implement the trait are crates of their own
//! (`hyperprune-engine-cpu`, `hyperprune-engine-burn`).
//!
//! It is not for plugin authors: plugins depend on `hyperprune-sdk` alone and never see
//! these types. The host turns a [`Model`] into the SDK's borrowed `ModelRef` without
//! copying (see [`model_ref`]).
//!
//! Key decision: a network is an [`ArchSpec`] lowered once, here, to a graph of named nodes
//! with explicit inputs ([`ArchSpec::graph`]); a sequential spec is a chain whose layer
//! indices name its tensors exactly as a PyTorch `nn.Sequential` `state_dict` does, and a
//! graph spec's node names are its tensor prefixes (torchvision's for the ResNet presets), so
//! models move between hyperprune and PyTorch through safetensors with no conversion step.
#![deny(missing_docs)]

pub mod arch;
pub mod batchnorm;
pub mod dataset;
pub mod engine;
pub mod gram;
pub mod masks;
pub mod metrics;
pub mod model;
#[cfg(test)]
mod mutation;
pub mod synflow;
mod view;
pub mod zoo;

pub use arch::{Activation, ArchError, ArchSpec, LayerSpec, ParamSpec, preset, presets};
pub use model::{Model, ModelError};
pub use view::{LayerViews, ViewError, model_ref};

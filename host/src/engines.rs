//! Choosing the execution engine and device from the command line.

use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use hyperprune_core::ArchSpec;
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::{DenseMatrix, Engine, EngineError, Evaluation, TrainEvent, TrainJob};
use hyperprune_core::model::Model;
use hyperprune_engine_burn::FlexEngine;
use hyperprune_engine_cpu::CpuEngine;

use crate::failure::bad_input;

/// Which engine runs the networks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// Hand-written CPU engine: batched members, im2col + GEMM (the CPU default).
    #[default]
    Cpu,
    /// burn 0.21 (flex backend on CPU, cuda backend on a GPU): the reference.
    Burn,
}

/// Builds the engine for `kind` on `device` (`cpu`, `cuda` or `cuda:N`).
///
/// # Errors
/// Bad input for an unknown device, or a device this build or machine cannot use.
pub fn engine(kind: EngineKind, device: &str) -> anyhow::Result<Box<dyn Engine>> {
    match device {
        "cpu" => Ok(match kind {
            EngineKind::Cpu => Box::new(Preferring::new(CpuEngine::new(), FlexEngine::new())),
            EngineKind::Burn => Box::new(FlexEngine::new()),
        }),
        d if d == "cuda" || d.starts_with("cuda:") => cuda_engine(d),
        other => Err(bad_input(format!("unknown device '{other}': expected cpu, cuda or cuda:N"))),
    }
}

/// Runs each call on `first`, or on `then` when `first` has no op for a layer of the call's
/// network ([`Engine::supports`]), saying so once on stderr. This is how the CPU engine runs a
/// layer kind only the burn engine has ops for.
pub struct Preferring<A, B> {
    first: A,
    then: B,
    noted: AtomicBool,
}

impl<A: Engine, B: Engine> Preferring<A, B> {
    /// `first`, falling back to `then`.
    pub fn new(first: A, then: B) -> Self {
        Preferring { first, then, noted: AtomicBool::new(false) }
    }

    /// The engine that runs networks of every spec in `specs`.
    fn pick<'s>(&self, specs: impl IntoIterator<Item = &'s ArchSpec>) -> &dyn Engine {
        for spec in specs {
            if let Err(e) = self.first.supports(spec) {
                if !self.noted.swap(true, Ordering::Relaxed) {
                    eprintln!("note: {e}; '{}' runs on the {} engine", spec.name, self.then.name());
                }
                return &self.then;
            }
        }
        &self.first
    }
}

impl<A: Engine, B: Engine> Engine for Preferring<A, B> {
    fn name(&self) -> &'static str {
        self.first.name()
    }

    fn supports(&self, spec: &ArchSpec) -> Result<(), EngineError> {
        self.first.supports(spec).or_else(|_| self.then.supports(spec))
    }

    fn name_for(&self, spec: &ArchSpec) -> &'static str {
        self.pick([spec]).name_for(spec)
    }

    fn logits(&self, model: &Model, samples: &Samples) -> Result<Vec<f32>, EngineError> {
        self.pick([model.spec()]).logits(model, samples)
    }

    fn evaluate(&self, models: &[&Model], samples: &Samples) -> Result<Vec<Evaluation>, EngineError> {
        self.pick(models.iter().map(|m| m.spec())).evaluate(models, samples)
    }

    fn train(
        &self,
        jobs: Vec<TrainJob>,
        samples: &Samples,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<Vec<Model>, EngineError> {
        let engine = self.pick(jobs.iter().map(|j| j.model.spec()));
        engine.train(jobs, samples, observer)
    }

    fn layer_input_hessian(
        &self,
        model: &Model,
        layer: usize,
        samples: &Samples,
    ) -> Result<(DenseMatrix<f64>, usize), EngineError> {
        self.pick([model.spec()]).layer_input_hessian(model, layer, samples)
    }

    fn per_sample_gradients(
        &self,
        model: &Model,
        samples: &Samples,
        minibatch: usize,
    ) -> Result<DenseMatrix<f32>, EngineError> {
        self.pick([model.spec()]).per_sample_gradients(model, samples, minibatch)
    }

    fn masked_loss_and_grad(
        &self,
        model: &Model,
        soft_mask: &[f32],
        samples: &Samples,
    ) -> Result<(f64, Vec<f32>), EngineError> {
        self.pick([model.spec()]).masked_loss_and_grad(model, soft_mask, samples)
    }

    fn masked_distill_loss_and_grad(
        &self,
        model: &Model,
        soft_mask: &[f32],
        samples: &Samples,
        temperature: f64,
    ) -> Result<(f64, Vec<f32>), EngineError> {
        self.pick([model.spec()]).masked_distill_loss_and_grad(model, soft_mask, samples, temperature)
    }

    fn recalibrate_batchnorm(&self, model: &Model, samples: &Samples) -> Result<Model, EngineError> {
        self.pick([model.spec()]).recalibrate_batchnorm(model, samples)
    }
}

/// The NVIDIA driver library every CUDA program loads.
const LIBCUDA: &str = "libcuda.so.1";

/// The NVIDIA driver library could not be loaded: why (the loader's first line), and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the NVIDIA driver library {LIBCUDA} could not be loaded ({reason}); install the NVIDIA driver, or use --device cpu"
)]
pub struct CudaDriverError {
    /// The first line of the dynamic loader's error.
    pub reason: String,
}

/// Checks that the NVIDIA driver library can be loaded.
///
/// # Errors
/// One line naming the missing library and the fix.
pub fn probe_cuda_driver() -> Result<(), CudaDriverError> {
    // SAFETY: loading the system's NVIDIA driver library runs its initialisers, which is
    // what any CUDA program does; the handle is dropped at once.
    match unsafe { libloading::Library::new(LIBCUDA) } {
        Ok(_) => Ok(()),
        Err(e) => Err(CudaDriverError { reason: e.to_string().lines().next().unwrap_or("not found").to_string() }),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_engine(device: &str) -> anyhow::Result<Box<dyn Engine>> {
    let driver = match probe_cuda_driver() {
        Ok(()) => String::new(),
        Err(e) => format!("; also, {e}"),
    };
    Err(bad_input(format!(
        "--device {device}: this hyperprune was built without CUDA support; rebuild with `cargo build --release --features cuda`{driver}"
    )))
}

#[cfg(feature = "cuda")]
fn cuda_engine(device: &str) -> anyhow::Result<Box<dyn Engine>> {
    probe_cuda_driver().map_err(|e| bad_input(format!("--device {device}: {e}")))?;
    let index = match device.split_once(':') {
        None => 0,
        Some((_, n)) => n
            .parse::<usize>()
            .map_err(|_| bad_input(format!("--device {device}: expected cuda:N with N a GPU index")))?,
    };
    hyperprune_engine_burn::cuda_engine(index).map_err(bad_input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_core::arch::LayerSpec;
    use hyperprune_core::engine::{Init, init_model};
    use hyperprune_core::preset;

    /// An engine without a batch norm op, whose logits are all 7.
    struct NoBatchNorm;

    impl Engine for NoBatchNorm {
        fn name(&self) -> &'static str {
            "no-bn"
        }

        fn supports(&self, spec: &ArchSpec) -> Result<(), EngineError> {
            match spec.layers.iter().position(|l| matches!(l, LayerSpec::BatchNorm2d { .. })) {
                Some(i) => Err(EngineError::unsupported_layer("no-bn", &i.to_string(), &spec.layers[i])),
                None => Ok(()),
            }
        }

        fn logits(&self, model: &Model, samples: &Samples) -> Result<Vec<f32>, EngineError> {
            Ok(vec![7.0; samples.len() * model.spec().classes])
        }

        fn evaluate(&self, _: &[&Model], _: &Samples) -> Result<Vec<Evaluation>, EngineError> {
            unreachable!("not called by the test")
        }

        fn train(
            &self,
            _: Vec<TrainJob>,
            _: &Samples,
            _: &mut dyn FnMut(TrainEvent),
        ) -> Result<Vec<Model>, EngineError> {
            unreachable!("not called by the test")
        }

        fn layer_input_hessian(
            &self,
            _: &Model,
            _: usize,
            _: &Samples,
        ) -> Result<(DenseMatrix<f64>, usize), EngineError> {
            unreachable!("not called by the test")
        }

        fn per_sample_gradients(&self, _: &Model, _: &Samples, _: usize) -> Result<DenseMatrix<f32>, EngineError> {
            unreachable!("not called by the test")
        }

        fn masked_loss_and_grad(&self, _: &Model, _: &[f32], _: &Samples) -> Result<(f64, Vec<f32>), EngineError> {
            unreachable!("not called by the test")
        }

        fn masked_distill_loss_and_grad(
            &self,
            _: &Model,
            _: &[f32],
            _: &Samples,
            _: f64,
        ) -> Result<(f64, Vec<f32>), EngineError> {
            unreachable!("not called by the test")
        }

        fn recalibrate_batchnorm(&self, _: &Model, _: &Samples) -> Result<Model, EngineError> {
            unreachable!("not called by the test")
        }
    }

    fn samples(spec: &ArchSpec, n: usize) -> Samples {
        let shape = spec.input;
        let len = n * shape.iter().product::<usize>();
        Samples { shape, images: (0..len).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect(), labels: vec![0; n] }
    }

    #[test]
    fn a_network_the_first_engine_cannot_run_runs_on_the_second() {
        let engine = Preferring::new(NoBatchNorm, FlexEngine::new());
        let chain = preset("cnn-s").unwrap();
        let x = samples(&chain, 3);
        let model = init_model(&chain, Init::Uniform, 1).unwrap();
        assert!(engine.logits(&model, &x).unwrap().iter().all(|&v| v == 7.0), "a chain runs on the first engine");

        let resnet = preset("resnet:depth=8,width=8,input=1x8x8").unwrap();
        assert!(NoBatchNorm.supports(&resnet).is_err());
        assert!(engine.supports(&resnet).is_ok(), "the pair runs what either runs");
        assert_eq!(engine.name_for(&chain), NoBatchNorm.name(), "a chain is recorded as the first engine's");
        assert_eq!(engine.name_for(&resnet), FlexEngine::new().name(), "the engine that ran it is recorded");
        let x = samples(&resnet, 3);
        let model = init_model(&resnet, Init::Uniform, 1).unwrap();
        let expected = FlexEngine::new().logits(&model, &x).unwrap();
        assert_eq!(engine.logits(&model, &x).unwrap(), expected, "a batch norm network runs on burn");
    }

    #[test]
    fn both_engines_run_every_preset() {
        for name in ["cnn-s", "cnn-digits", "lenet5", "mlpnet", "resnet-s", "resnet20"] {
            let spec = preset(name).unwrap();
            assert!(CpuEngine::new().supports(&spec).is_ok(), "{name} on the CPU engine");
            assert!(FlexEngine::new().supports(&spec).is_ok(), "{name} on burn");
        }
    }
}

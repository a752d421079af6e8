//! Execution engines behind the [`Engine`] trait.

mod base;
pub mod burn;
pub mod cpu;
mod init;

pub use self::burn::{BurnEngine, FlexEngine};
pub use self::cpu::CpuEngine;
pub use base::{DenseMatrix, Engine, EngineError, Evaluation, Init, Optimizer, TrainConfig, TrainEvent, TrainJob};
pub use init::init_model;

/// The burn engine on CUDA GPU `index`, checked with a tiny forward pass so that a missing
/// driver or NVRTC is one clear error instead of a panic on first use.
///
/// # Errors
/// A one-line message saying what failed and how to fix it.
#[cfg(feature = "cuda")]
pub fn cuda_engine(index: usize) -> Result<Box<dyn Engine>, String> {
    type CudaEngine = BurnEngine<::burn::backend::Autodiff<::burn::backend::Cuda>>;
    let probe = std::panic::catch_unwind(|| {
        let engine = CudaEngine::with_device("burn-cuda", ::burn::backend::cuda::CudaDevice::new(index));
        let spec = crate::preset("mlpnet").expect("mlpnet is a preset");
        let model = crate::Model::zeros(spec).expect("mlpnet is valid");
        let samples = crate::dataset::Samples { shape: [1, 28, 28], images: vec![0.0; 784], labels: vec![0] };
        engine.logits(&model, &samples).map(|_| engine)
    });
    match probe {
        Ok(Ok(engine)) => Ok(Box::new(engine)),
        Ok(Err(e)) => Err(format!("--device cuda:{index}: the GPU could not run a test forward pass: {e}")),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            let first = message.lines().next().unwrap_or("unknown error");
            Err(format!(
                "--device cuda:{index}: CUDA is not usable here ({first}); install the NVIDIA driver (libcuda) and NVRTC, or use --device cpu"
            ))
        }
    }
}

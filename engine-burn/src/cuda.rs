//! The burn engine on an NVIDIA GPU, checked before use.

use burn::backend::cuda::CudaDevice;
use burn::backend::{Autodiff, Cuda};
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::Engine;
use hyperprune_core::{Model, preset};

use crate::BurnEngine;

/// The burn engine on CUDA GPU `index`, checked with a tiny forward pass so that a missing
/// driver or NVRTC is one clear error instead of a panic on first use.
///
/// # Errors
/// A one-line message saying what failed and how to fix it.
pub fn cuda_engine(index: usize) -> Result<Box<dyn Engine>, String> {
    type CudaEngine = BurnEngine<Autodiff<Cuda>>;
    let probe = std::panic::catch_unwind(|| {
        let engine = CudaEngine::with_device("burn-cuda", CudaDevice::new(index));
        let spec = preset("mlpnet").expect("mlpnet is a preset");
        let model = Model::zeros(spec).expect("mlpnet is valid");
        let samples = Samples { shape: [1, 28, 28], images: vec![0.0; 784], labels: vec![0] };
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

//! Choosing the execution engine and device from the command line.

use clap::ValueEnum;
use hyperprune_core::engine::Engine;
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
            EngineKind::Cpu => Box::new(CpuEngine::new()),
            EngineKind::Burn => Box::new(FlexEngine::new()),
        }),
        d if d == "cuda" || d.starts_with("cuda:") => cuda_engine(d),
        other => Err(bad_input(format!("unknown device '{other}': expected cpu, cuda or cuda:N"))),
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

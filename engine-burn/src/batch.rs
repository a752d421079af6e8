//! Moving samples onto the device: image batches, one-hot targets, and the checks that
//! samples fit a network.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use hyperprune_core::arch::ArchSpec;
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::EngineError;

/// Samples per forward pass when nothing is trained (evaluation, calibration).
pub(super) const INFERENCE_BATCH: usize = 1024;

/// Checks that `samples` can be fed to a network built from `spec`.
///
/// # Errors
/// [`EngineError::Mismatch`] naming the network, when the image shape, the number of
/// pixels or a label does not fit.
pub(super) fn check_samples(spec: &ArchSpec, samples: &Samples) -> Result<(), EngineError> {
    hyperprune_core::engine::check_samples(spec, samples)
}

/// The images of samples `indices`, in that order.
///
/// # Shapes
/// - returns `[indices.len(), c, h, w]`
pub(super) fn images_at<Bk: Backend>(samples: &Samples, indices: &[usize], device: &Bk::Device) -> Tensor<Bk, 4> {
    let mut pixels = Vec::with_capacity(indices.len() * samples.image_len());
    for &i in indices {
        pixels.extend_from_slice(samples.image(i));
    }
    let [c, h, w] = samples.shape;
    Tensor::from_data(TensorData::new(pixels, [indices.len(), c, h, w]), device)
}

/// The images of the consecutive samples `range`.
///
/// # Shapes
/// - returns `[range.len(), c, h, w]`
pub(super) fn images_in<Bk: Backend>(
    samples: &Samples,
    range: std::ops::Range<usize>,
    device: &Bk::Device,
) -> Tensor<Bk, 4> {
    let d = samples.image_len();
    let [c, h, w] = samples.shape;
    let pixels = samples.images[range.start * d..range.end * d].to_vec();
    Tensor::from_data(TensorData::new(pixels, [range.len(), c, h, w]), device)
}

/// One-hot rows for `labels`.
///
/// # Shapes
/// - returns `[labels.len(), classes]`
pub(super) fn one_hot<Bk: Backend>(
    labels: impl ExactSizeIterator<Item = u32>,
    classes: usize,
    device: &Bk::Device,
) -> Tensor<Bk, 2> {
    let n = labels.len();
    let mut rows = vec![0f32; n * classes];
    for (i, label) in labels.enumerate() {
        rows[i * classes + label as usize] = 1.0;
    }
    Tensor::from_data(TensorData::new(rows, [n, classes]), device)
}

/// Consecutive ranges of at most `size` samples covering `0..n`.
pub(super) fn chunks(n: usize, size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).step_by(size.max(1)).map(move |start| start..(start + size).min(n))
}

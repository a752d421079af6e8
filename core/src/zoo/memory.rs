//! How much memory training one chunk of zoo members needs, checked against what the machine
//! has before anything is allocated: an architecture or chunk too large for memory is one
//! clear error instead of an aborted process.
//!
//! The estimate is simple: per member, [`PARAM_COPIES`] copies of the parameters and
//! [`ACTIVATION_COPIES`] copy of one batch's activations, 4 bytes each. Against the measured
//! growth of peak resident memory (MNIST 10k, one epoch, 2-core VM; `docs/RELIABILITY.md`)
//! it is 1.0–1.7× at batch 64 on either engine, and 2.5× (burn) to 7× (CPU, which runs a
//! batch in chunks) at batch 512: close where parameters dominate, which is when an
//! architecture is too large, and high for large batches of activation-heavy networks.

use crate::arch::{ArchError, ArchSpec};

/// Copies of a member's parameters alive during training: the initial model, the engine's
/// working copy, Adam's two moments, a partial gradient and the summed gradient (the CPU
/// engine keeps up to eight partials per member for large batches; 5.5 copies were
/// measured with 64 `mlpnet` members at batch 64).
pub const PARAM_COPIES: u64 = 6;

/// Copies of a batch's activations alive per member: every layer's output for the backward
/// pass, once (the burn engine materialises the batch; the CPU engine runs it in chunks and
/// needs less).
pub const ACTIVATION_COPIES: u64 = 1;

/// Bytes per scalar (f32).
const SCALAR_BYTES: u64 = 4;

/// The estimated bytes to train `members` members of `arch` together at `batch_size`.
/// Saturates at `u64::MAX` rather than overflowing.
///
/// # Errors
/// [`ArchError`] when the spec is invalid.
pub fn chunk_memory(arch: &ArchSpec, members: usize, batch_size: usize) -> Result<u64, ArchError> {
    let params = arch.param_count()? as u64;
    let [c, h, w] = arch.input;
    let activations = arch
        .shapes()?
        .iter()
        .map(|s| s.numel() as u64)
        .fold((c as u64).saturating_mul(h as u64).saturating_mul(w as u64), u64::saturating_add);
    let per_member = PARAM_COPIES
        .saturating_mul(params)
        .saturating_add(ACTIVATION_COPIES.saturating_mul(batch_size as u64).saturating_mul(activations));
    Ok(per_member.saturating_mul(SCALAR_BYTES).saturating_mul(members as u64))
}

/// Bytes a zoo's plan takes in memory for `members` members: each member's record holds its
/// own copy of the architecture (counted as twice its JSON size) and about 1 KiB of id,
/// file name, hyperparameters and `zoo.json` text. Saturates at `u64::MAX`.
pub fn plan_memory(arch: &ArchSpec, members: usize) -> u64 {
    let arch_bytes = serde_json::to_vec(arch).map_or(4096, |json| json.len() as u64);
    arch_bytes.saturating_mul(2).saturating_add(1024).saturating_mul(members as u64)
}

/// Bytes this process may still allocate: `MemAvailable` from `/proc/meminfo`, lowered to
/// the cgroup (v2) limit's headroom when a container sets one. `None` when unknown (not
/// Linux, or the files are unreadable), in which case no check is made.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo_available(&meminfo)?;
    let read = |path: &str| std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .map(|max| max.saturating_sub(read("/sys/fs/cgroup/memory.current").unwrap_or(0)));
    Some(cgroup.map_or(available, |headroom| headroom.min(available)))
}

/// The `MemAvailable` line of `/proc/meminfo`, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// `bytes` in GiB, for messages.
pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnn_digits_chunk_estimate_counts_parameters_and_activations() {
        let arch = crate::preset("cnn-digits").unwrap();
        let params = arch.param_count().unwrap() as u64;
        let activations: u64 = 64 + arch.shapes().unwrap().iter().map(|s| s.numel() as u64).sum::<u64>();
        let one = chunk_memory(&arch, 1, 32).unwrap();
        assert_eq!(one, 4 * (6 * params + 32 * activations));
        assert_eq!(chunk_memory(&arch, 24, 32).unwrap(), 24 * one);
        // A default chunk of the demo's zoo is far below any machine's memory.
        assert!(chunk_memory(&arch, 24, 32).unwrap() < 64 << 20);
    }

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   23000000 kB\n";
        assert_eq!(meminfo_available(text), Some(23_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 1 kB\n"), None);
        assert_eq!(meminfo_available("MemAvailable: lots kB\n"), None);
    }
}

//! What machine this is, for `run.json` and benchmark output.

/// A one-line description of this machine: OS, architecture, cores, CPU model.
pub fn describe() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = hyperprune_sdk::available_threads();
    format!("{} {}, {cores} cores, {cpu}", std::env::consts::OS, std::env::consts::ARCH)
}

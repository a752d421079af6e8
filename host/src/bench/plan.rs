//! The task list of a bench: every (member, pruner, sparsity), in a fixed order, and the
//! deterministic shard of it this process runs.

/// One unit of work.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Index into the selected members.
    pub member: usize,
    /// Index into the pruners.
    pub pruner: usize,
    /// Requested sparsity.
    pub sparsity: f64,
}

/// `i/n`: this process runs tasks `i, i+n, i+2n, ...` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard's index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s.split_once('/').and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => Err(format!("--shard expects i/n with 0 <= i < n, got '{s}'")),
        }
    }
}

/// Every task, member-major, then pruner, then sparsity; restricted to `shard`.
pub fn tasks(members: usize, pruners: usize, sparsities: &[f64], shard: Option<Shard>) -> Vec<Task> {
    let mut all = Vec::with_capacity(members * pruners * sparsities.len());
    for member in 0..members {
        for pruner in 0..pruners {
            for &sparsity in sparsities {
                all.push(Task { member, pruner, sparsity });
            }
        }
    }
    match shard {
        None => all,
        Some(s) => all.into_iter().enumerate().filter(|(i, _)| i % s.count == s.index).map(|(_, t)| t).collect(),
    }
}

/// Sparsity for a compression ratio `c ≥ 1`: `1 − 1/c`.
pub fn sparsity_for(compression: f64) -> f64 {
    1.0 - 1.0 / compression
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_tasks() {
        let all = tasks(3, 2, &[0.5, 0.75], None);
        assert_eq!(all.len(), 12);
        let mut joined: Vec<Task> =
            (0..5).flat_map(|i| tasks(3, 2, &[0.5, 0.75], Some(Shard { index: i, count: 5 }))).collect();
        joined.sort_by(|a, b| (a.member, a.pruner).cmp(&(b.member, b.pruner)).then(a.sparsity.total_cmp(&b.sparsity)));
        assert_eq!(joined, all);
        assert!("3/3".parse::<Shard>().is_err());
        assert_eq!(sparsity_for(32.0), 0.96875);
    }
}

//! The greedy OBS pass over one output row (ExactOBS, Frantar & Alistarh 2022, Algorithm 1;
//! L-OBS, Dong et al. 2017): remove one weight at a time, the one whose removal raises the
//! row's loss least, compensate with the remaining weights, and shrink the inverse Hessian
//! to the remaining ones. One pass records every sparsity of the row.
//!
//! Losses are in the `G = XᵀX/n` convention of [`crate::hessian`]: removing `q` costs
//! `w_q² / [G⁻¹]_qq`.

/// Which weights of a row may be removed, and how many in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quota {
    /// Any weight, up to `steps` removals.
    Free {
        /// Number of removals to perform (at most the row length).
        steps: usize,
    },
    /// N:M: the row is cut into consecutive groups of `size` weights and group `g` loses
    /// exactly `remove[g]` of them.
    Groups {
        /// Group length `m` (the last group may be shorter).
        size: usize,
        /// Removals per group.
        remove: Vec<usize>,
    },
}

impl Quota {
    /// The N:M quota of a row of length `d`, with the convention of
    /// `hyperprune_sdk::masking::nm_keep`: a full group keeps `n`, a shorter last group of
    /// length `len` keeps `round(n/m · len)`.
    pub fn n_of_m(d: usize, n: usize, m: usize) -> Quota {
        let remove = (0..d.div_ceil(m))
            .map(|g| {
                let len = m.min(d - g * m);
                let kept = if len == m { n } else { ((n as f64 / m as f64) * len as f64).round() as usize };
                len - kept.min(len)
            })
            .collect();
        Quota::Groups { size: m, remove }
    }

    fn steps(&self, d: usize) -> usize {
        match self {
            Quota::Free { steps } => (*steps).min(d),
            Quota::Groups { remove, .. } => remove.iter().sum(),
        }
    }
}

/// What one row's pass records.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPass {
    /// Column indices in the order they were removed.
    pub order: Vec<u32>,
    /// Loss increase of each removal, `w_q² / [G⁻¹]_qq` at that step; the loss after `k`
    /// removals is the sum of the first `k`.
    pub step_loss: Vec<f64>,
    /// The row after the last removal (removed entries are exactly zero). The weights at an
    /// intermediate step are obtained by re-solving on the support, see
    /// [`crate::hessian::DampedHessian::solve_on_support`].
    pub weights: Vec<f64>,
}

/// Removals whose downdates are deferred and applied to the working matrix together.
const BLOCK: usize = 32;

/// Runs the greedy pass on row `w` with `hinv = G⁻¹` (`d × d` row-major, symmetric).
///
/// Removing `q` applies the OBS update to the other weights (OBC eq. 2) and the Gauss–Jordan
/// downdate `G⁻¹ ← G⁻¹ − G⁻¹[:,q] G⁻¹[q,:] / [G⁻¹]_qq` (OBC Lemma 1, eq. 3), which zeroes row
/// and column `q`.
/// Done eagerly, every step streams the whole `d × d` matrix through memory; instead the
/// downdates are kept as pending rank-1 terms `u uᵀ` (`u = G⁻¹[:,q] / √[G⁻¹]_qq`) and
/// applied [`BLOCK`] at a time as one matrix product, while the diagonal (all the selection
/// needs) and row `q` (all the update needs) are corrected for the pending terms exactly.
/// Only the lower triangle is updated (the matrix stays symmetric), and once one eighth of
/// the working matrix is removed it is compacted to the live weights, so a full pass costs
/// about `(8/7)² · d³/6` multiply-adds rather than the `d³` of eager full updates.
pub fn prune_row(hinv: &[f64], w: &[f64], quota: &Quota) -> RowPass {
    let d = w.len();
    debug_assert_eq!(hinv.len(), d * d);
    let steps = quota.steps(d);
    let mut work = Working::new(hinv, w);
    let mut removed_in_group = match quota {
        Quota::Groups { remove, .. } => vec![0usize; remove.len()],
        Quota::Free { .. } => Vec::new(),
    };
    let mut order = Vec::with_capacity(steps);
    let mut step_loss = Vec::with_capacity(steps);
    let mut removed_here = 0;
    for _ in 0..steps {
        let allowed = |col: usize| match quota {
            Quota::Free { .. } => true,
            Quota::Groups { size, remove } => removed_in_group[col / size] < remove[col / size],
        };
        let Some(q) = work.cheapest(allowed) else { break };
        let col = work.cols[q];
        let loss = work.remove(q);
        if let Quota::Groups { size, .. } = quota {
            removed_in_group[col / size] += 1;
        }
        order.push(col as u32);
        step_loss.push(loss);
        removed_here += 1;
        let compact = removed_here * 8 >= work.m && work.m > 8;
        if work.pending == BLOCK || compact {
            work.fold();
        }
        if compact {
            work.compact();
            removed_here = 0;
        }
    }
    let mut weights = vec![0.0; d];
    for (k, &col) in work.cols.iter().enumerate() {
        if work.alive[k] {
            weights[col] = work.x[k];
        }
    }
    RowPass { order, step_loss, weights }
}

/// The working state over the original columns `cols`: `a` is `m × m` (lower triangle
/// current, upper triangle stale) with `pending` downdates `u_k` (rows of `u`, `BLOCK × m`)
/// not yet subtracted; `diag` is the diagonal of `a − Σ u_k u_kᵀ`; `x` is the current row.
struct Working {
    m: usize,
    cols: Vec<usize>,
    a: Vec<f64>,
    u: Vec<f64>,
    pending: usize,
    diag: Vec<f64>,
    x: Vec<f64>,
    alive: Vec<bool>,
}

impl Working {
    fn new(hinv: &[f64], w: &[f64]) -> Working {
        let m = w.len();
        Working {
            m,
            cols: (0..m).collect(),
            a: hinv.to_vec(),
            u: vec![0.0; BLOCK * m],
            pending: 0,
            diag: (0..m).map(|k| hinv[k * m + k]).collect(),
            x: w.to_vec(),
            alive: vec![true; m],
        }
    }

    /// The allowed live weight of least loss `x_q² / [G⁻¹]_qq` (ties: the lowest index).
    fn cheapest(&self, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for k in 0..self.m {
            if !self.alive[k] || !allowed(self.cols[k]) {
                continue;
            }
            let loss = self.x[k] * self.x[k] / pivot(self.diag[k]);
            if best.is_none_or(|(_, b)| loss < b) {
                best = Some((k, loss));
            }
        }
        best.map(|(k, _)| k)
    }

    /// Removes live weight `q` and returns its loss `x_q² / [G⁻¹]_qq`.
    fn remove(&mut self, q: usize) -> f64 {
        let m = self.m;
        // Row q of the current inverse: the stored row (only the lower triangle is kept up
        // to date, so row q's tail is read down column q) minus the pending downdates.
        let mut row_q: Vec<f64> = (0..m).map(|j| if j <= q { self.a[q * m + j] } else { self.a[j * m + q] }).collect();
        for k in 0..self.pending {
            let u = &self.u[k * m..(k + 1) * m];
            let c = u[q];
            if c != 0.0 {
                for (r, v) in row_q.iter_mut().zip(u) {
                    *r -= c * v;
                }
            }
        }
        let p = pivot(row_q[q]);
        let loss = self.x[q] * self.x[q] / p;
        // δ = −(w_q / [G⁻¹]_qq) G⁻¹[:, q] (OBC eq. 2); G⁻¹ is symmetric, so row q serves.
        let f = self.x[q] / p;
        for (x, r) in self.x.iter_mut().zip(&row_q) {
            *x -= f * r;
        }
        self.x[q] = 0.0;
        let s = p.sqrt();
        let u = &mut self.u[self.pending * m..(self.pending + 1) * m];
        for ((u, r), dg) in u.iter_mut().zip(&row_q).zip(self.diag.iter_mut()) {
            *u = r / s;
            *dg -= *u * *u;
        }
        self.pending += 1;
        self.alive[q] = false;
        loss
    }

    /// Applies the pending downdates to the lower triangle: `a ← a − Uᵀ U`, one matrix
    /// product at half the cost of the full one (the matrix is symmetric).
    fn fold(&mut self) {
        use faer::linalg::matmul::triangular::{BlockStructure, matmul};
        let (m, k) = (self.m, self.pending);
        if k == 0 {
            return;
        }
        let u = faer::MatRef::from_row_major_slice(&self.u[..k * m], k, m);
        let a = faer::MatMut::from_row_major_slice_mut(&mut self.a, m, m);
        let full = BlockStructure::Rectangular;
        matmul(
            a,
            BlockStructure::TriangularLower,
            faer::Accum::Add,
            u.transpose(),
            full,
            u,
            full,
            -1.0,
            faer::Par::Seq,
        );
        self.pending = 0;
        // The tracked diagonal equals the folded one up to rounding; resync to stop drift.
        for i in 0..m {
            self.diag[i] = self.a[i * m + i];
        }
    }

    /// Drops removed rows and columns from the working matrix (no downdates pending).
    fn compact(&mut self) {
        debug_assert_eq!(self.pending, 0);
        let live: Vec<usize> = (0..self.m).filter(|&k| self.alive[k]).collect();
        let n = live.len();
        let mut a = Vec::with_capacity(n * n);
        for (r, &i) in live.iter().enumerate() {
            // Lower triangle only; the upper one is stale and never read.
            a.extend(live[..=r].iter().map(|&j| self.a[i * self.m + j]));
            a.extend(std::iter::repeat_n(0.0, n - r - 1));
        }
        self.a = a;
        self.diag = live.iter().map(|&k| self.diag[k]).collect();
        self.x = live.iter().map(|&k| self.x[k]).collect();
        self.cols = live.iter().map(|&k| self.cols[k]).collect();
        self.alive = vec![true; n];
        self.u.truncate(BLOCK * n);
        self.m = n;
    }
}

/// Rounding can leave a tiny or negative pivot late in a long pass on an ill-conditioned
/// `G`; clamping keeps the step defined (its loss is huge, so such a weight goes last).
fn pivot(p: f64) -> f64 {
    p.max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hessian::DampedHessian;
    use hyperprune_sdk::rng::SplitMix64;

    /// `n × d` standard-normal-ish data (sum of uniforms, exact enough for tests).
    fn random_x(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut r = SplitMix64::new(seed);
        (0..n * d).map(|_| (0..4).map(|_| r.next_f64()).sum::<f64>() - 2.0).collect()
    }

    fn xtx_over_n(x: &[f64], n: usize, d: usize) -> Vec<f64> {
        let mut g = vec![0.0; d * d];
        for r in 0..n {
            for i in 0..d {
                for j in 0..d {
                    g[i * d + j] += x[r * d + i] * x[r * d + j] / n as f64;
                }
            }
        }
        g
    }

    /// `(1/n)‖Xw − Xŵ‖²`, computed from the data, not from G.
    fn output_loss(x: &[f64], n: usize, w: &[f64], w_hat: &[f64]) -> f64 {
        let d = w.len();
        (0..n)
            .map(|r| {
                let e: f64 = (0..d).map(|j| x[r * d + j] * (w[j] - w_hat[j])).sum();
                e * e
            })
            .sum::<f64>()
            / n as f64
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        assert_eq!(a.len(), b.len());
        for (j, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < tol, "{what}, weight {j}: {x} vs {y}");
        }
    }

    fn random_w(d: usize, seed: u64) -> Vec<f64> {
        let mut r = SplitMix64::new(seed);
        (0..d).map(|_| 2.0 * r.next_f64() - 1.0).collect()
    }

    /// The Lagrangian solution of min ½δᵀHδ s.t. e_qᵀδ + w_q = 0, written out for one q by a
    /// direct KKT solve (Gaussian elimination on the (d+1)×(d+1) system) rather than through
    /// G⁻¹, so it checks the OBS formulas independently.
    fn kkt_single_removal(g: &DampedHessian, w: &[f64], q: usize) -> Vec<f64> {
        let d = w.len();
        let n = d + 1;
        // [G e_q; e_qᵀ 0] [δ; μ] = [0; −w_q]
        let mut a = vec![0.0; n * (n + 1)];
        for i in 0..d {
            for j in 0..d {
                a[i * (n + 1) + j] = g.get(i, j);
            }
        }
        a[q * (n + 1) + d] = 1.0;
        a[d * (n + 1) + q] = 1.0;
        a[d * (n + 1) + n] = -w[q];
        for col in 0..n {
            let p =
                (col..n).max_by(|&i, &j| a[i * (n + 1) + col].abs().total_cmp(&a[j * (n + 1) + col].abs())).unwrap();
            for k in 0..=n {
                a.swap(col * (n + 1) + k, p * (n + 1) + k);
            }
            for i in 0..n {
                if i != col {
                    let f = a[i * (n + 1) + col] / a[col * (n + 1) + col];
                    for k in col..=n {
                        a[i * (n + 1) + k] -= f * a[col * (n + 1) + k];
                    }
                }
            }
        }
        (0..d).map(|i| w[i] + a[i * (n + 1) + n] / a[i * (n + 1) + i]).collect()
    }

    #[test]
    fn single_removal_matches_the_constrained_least_squares_optimum() {
        let (n, d) = (40, 7);
        let x = random_x(n, d, 1);
        let w = random_w(d, 2);
        // damp = 0 with full-rank X: the OBS loss is exactly the output loss.
        let g = DampedHessian::new(d, &xtx_over_n(&x, n, d), 0.0).unwrap();
        let hinv = g.inverse().unwrap();
        let pass = prune_row(&hinv, &w, &Quota::Free { steps: 1 });
        let q = pass.order[0] as usize;
        // OBS picks the q minimising w_q²/[G⁻¹]_qq: check against every candidate's KKT optimum.
        let mut best = f64::INFINITY;
        for cand in 0..d {
            let w_hat = kkt_single_removal(&g, &w, cand);
            // Each KKT solution is the constrained optimum of the full least-squares problem.
            let support: Vec<bool> = (0..d).map(|j| j != cand).collect();
            let ls = g.solve_on_support(&w, &support).unwrap();
            // Both are O(κ·ε) accurate solves of a κ ≈ 10 system: 1e-10 leaves 10⁵ of slack.
            assert_close(&w_hat, &ls, 1e-10, &format!("candidate {cand}"));
            best = best.min(output_loss(&x, n, &w, &w_hat));
        }
        let kkt = kkt_single_removal(&g, &w, q);
        assert_close(&pass.weights, &kkt, 1e-10, "greedy choice");
        assert_eq!(pass.weights[q], 0.0);
        let direct = output_loss(&x, n, &w, &pass.weights);
        // The reported loss and the loss recomputed from X agree to rounding of sums of
        // O(1) terms: relative 1e-10.
        assert!((pass.step_loss[0] - direct).abs() < 1e-10 * direct.max(1.0), "{} vs {direct}", pass.step_loss[0]);
        assert!((direct - best).abs() < 1e-10 * best.max(1.0), "greedy choice {direct} is not the best {best}");
    }

    #[test]
    fn every_greedy_step_equals_a_least_squares_resolve_on_its_support() {
        let (n, d) = (60, 12);
        let x = random_x(n, d, 3);
        let w = random_w(d, 4);
        for damp in [0.0, 0.01] {
            let g = DampedHessian::new(d, &xtx_over_n(&x, n, d), damp).unwrap();
            let hinv = g.inverse().unwrap();
            for k in 1..=d {
                let pass = prune_row(&hinv, &w, &Quota::Free { steps: k });
                let mut keep = vec![true; d];
                for &c in &pass.order {
                    keep[c as usize] = false;
                }
                let ls = g.solve_on_support(&w, &keep).unwrap();
                let cumulative: f64 = pass.step_loss.iter().sum();
                let resolved = g.loss(&w, &ls);
                // d = 12 downdates in f64 on a κ ≲ 10² matrix: errors stay far below 1e-9.
                assert!((cumulative - resolved).abs() < 1e-9 * resolved.max(1.0), "k {k}: {cumulative} vs {resolved}");
                assert_close(&pass.weights, &ls, 1e-9, &format!("k {k}"));
                if damp == 0.0 {
                    let direct = output_loss(&x, n, &w, &pass.weights);
                    assert!((cumulative - direct).abs() < 1e-9 * direct.max(1.0), "k {k}: {cumulative} vs {direct}");
                }
                // Each step is also the greedy optimum among the survivors of the step before.
                if k >= 2 {
                    let before = prune_row(&hinv, &w, &Quota::Free { steps: k - 1 });
                    let mut keep_before = vec![true; d];
                    for &c in &before.order {
                        keep_before[c as usize] = false;
                    }
                    let best = (0..d)
                        .filter(|&j| keep_before[j])
                        .map(|j| {
                            let mut s = keep_before.clone();
                            s[j] = false;
                            g.loss(&w, &g.solve_on_support(&w, &s).unwrap())
                        })
                        .fold(f64::INFINITY, f64::min);
                    assert!((resolved - best).abs() < 1e-9 * best.max(1.0), "k {k}: {resolved} vs best {best}");
                }
            }
        }
    }

    #[test]
    fn compaction_does_not_change_the_pass() {
        // d = 40 compacts several times; a pass capped before the first compaction must agree
        // with the long pass on its prefix, and the long pass must match a re-solve.
        let (n, d) = (120, 40);
        let x = random_x(n, d, 5);
        let w = random_w(d, 6);
        let g = DampedHessian::new(d, &xtx_over_n(&x, n, d), 0.01).unwrap();
        let hinv = g.inverse().unwrap();
        let long = prune_row(&hinv, &w, &Quota::Free { steps: 30 });
        let short = prune_row(&hinv, &w, &Quota::Free { steps: 4 });
        assert_eq!(&long.order[..4], &short.order[..]);
        let mut keep = vec![true; d];
        for &c in &long.order {
            keep[c as usize] = false;
        }
        let ls = g.solve_on_support(&w, &keep).unwrap();
        let cumulative: f64 = long.step_loss.iter().sum();
        // 30 downdates on a κ ≈ 10 matrix: relative 1e-9 is ~10⁵ ulps of slack.
        assert!((cumulative - g.loss(&w, &ls)).abs() < 1e-9 * cumulative.max(1.0));
        assert_close(&long.weights, &ls, 1e-9, "30 steps");
    }

    #[test]
    fn deferred_downdates_match_a_resolve_on_a_wide_row() {
        // d = 300: blocks of 32 removals are folded before the first compaction (at 38), so
        // the pending-downdate corrections of row q and of the diagonal are exercised.
        let (n, d) = (600, 300);
        let x = random_x(n, d, 11);
        let w = random_w(d, 12);
        let g = DampedHessian::new(d, &xtx_over_n(&x, n, d), 0.01).unwrap();
        let hinv = g.inverse().unwrap();
        for k in [20, 33, 100, 250] {
            let pass = prune_row(&hinv, &w, &Quota::Free { steps: k });
            let mut keep = vec![true; d];
            for &c in &pass.order {
                keep[c as usize] = false;
            }
            let ls = g.solve_on_support(&w, &keep).unwrap();
            let cumulative: f64 = pass.step_loss.iter().sum();
            // Hundreds of downdates on a κ ≈ 10–100 matrix in f64: 1e-8 relative is still
            // ~10⁷ ulps of slack, far below any error a wrong formula would make.
            assert!((cumulative - g.loss(&w, &ls)).abs() < 1e-8 * cumulative.max(1.0), "k {k}");
            assert_close(&pass.weights, &ls, 1e-8, &format!("k {k}"));
        }
    }

    #[test]
    fn rank_deficient_inputs_still_prune_with_damping() {
        // n = 5 samples for d = 12 weights: XᵀX has rank 5, so only damping makes G invertible.
        let (n, d) = (5, 12);
        let x = random_x(n, d, 7);
        let w = random_w(d, 8);
        assert!(DampedHessian::new(d, &xtx_over_n(&x, n, d), 0.0).unwrap().inverse().is_err());
        let g = DampedHessian::new(d, &xtx_over_n(&x, n, d), 0.01).unwrap();
        let pass = prune_row(&g.inverse().unwrap(), &w, &Quota::Free { steps: d });
        assert_eq!(pass.order.len(), d);
        assert!(pass.step_loss.iter().all(|l| l.is_finite() && *l >= 0.0), "{:?}", pass.step_loss);
        // With 7 free directions in the null space of X, the first removals are nearly free
        // in output loss: the damped loss of the first 7 is dominated by the λ'‖δ‖² term.
        let first: f64 = pass.step_loss[..d - n].iter().sum();
        let all: f64 = pass.step_loss.iter().sum();
        assert!(first < 0.1 * all, "first {} removals cost {first} of {all}", d - n);
        let mut keep = vec![true; d];
        for &c in &pass.order[..d - n] {
            keep[c as usize] = false;
        }
        let ls = g.solve_on_support(&w, &keep).unwrap();
        assert!(ls.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn n_of_m_quota_removes_exactly_per_group() {
        let (n, d) = (50, 10);
        let x = random_x(n, d, 9);
        let w = random_w(d, 10);
        let g = DampedHessian::new(d, &xtx_over_n(&x, n, d), 0.01).unwrap();
        let quota = Quota::n_of_m(d, 2, 4);
        // Groups of 4, 4 and a short one of 2 that keeps round(2/4·2) = 1.
        assert_eq!(quota, Quota::Groups { size: 4, remove: vec![2, 2, 1] });
        let pass = prune_row(&g.inverse().unwrap(), &w, &quota);
        let mut per_group = [0; 3];
        for &c in &pass.order {
            per_group[c as usize / 4] += 1;
        }
        assert_eq!(per_group, [2, 2, 1]);
    }
}

//! The ridge back-solve: the exact optimum of CHITA's quadratic on a fixed support.
//!
//! With the support `S` fixed and `w = 0` outside it, the objective
//! `f(w) = ½‖G(w − w̄)‖² + (μ/2)‖w − w̄‖²` (see [`crate::solver`]) is a ridge least-squares
//! problem in `δ = w_S − w̄_S`. Writing `c = G_{S̄}·w̄_{S̄}` (what the pruned weights
//! contributed), `G(w − w̄) = G_S·δ − c`, and the normal equations are
//!
//! ```text
//! (G_SᵀG_S + μI_k)·δ = G_Sᵀ·c                       (k × k)
//! ```
//!
//! When `k ≤ n` they are formed and solved directly (Cholesky, `O(n·k² + k³)`). When
//! `n < k` the push-through form of the Woodbury identity,
//! `(G_SᵀG_S + μI_k)⁻¹G_Sᵀ = G_Sᵀ(G_SG_Sᵀ + μI_n)⁻¹`, gives
//!
//! ```text
//! δ = G_Sᵀ·z,   (G_SG_Sᵀ + μI_n)·z = c               (n × n)
//! ```
//!
//! at `O(n²·k + n³)`. Neither path forms anything `p × p`: the largest matrix is
//! `min(n, k)²` (`n²` for [`SampleSystem`]), and `G_S` is read in chunks converted to f64 on
//! the fly.
//!
//! # Swaps on the `n × n` system
//!
//! [`SampleSystem`] keeps `K = G_SG_Sᵀ + μI` factorised, which makes the optimal objective
//! on `S` a closed form, `F(S) = (μ/2)·(cᵀK⁻¹c + Σ_{j∉S} w̄ⱼ²)` (the minimum of a ridge
//! problem `½‖Aδ − c‖² + (μ/2)‖δ‖²` is `(μ/2)cᵀ(AAᵀ + μI)⁻¹c`), and scores the exact
//! `F(S − i + j)` of a swap by a rank-2 Woodbury update of `K⁻¹` in `O(n)` per pair once
//! `K⁻¹Gᵢ` and `K⁻¹Gⱼ` are known. The active-set updates of [`crate::solver`] use it.
//!
//! Every one of those quantities is `K⁻¹` applied to a vector, so the system has two
//! [`Form`]s that differ only in how `K⁻¹` is applied. The dual form factorises `K` itself
//! (`n × n`). When fewer weights are kept than there are samples (`k < n`, high compression)
//! the primal form factorises `H = G_SᵀG_S + μI_k` instead and uses the Woodbury identity
//! `K⁻¹ = (I − G_S H⁻¹G_Sᵀ)/μ`: a round of swaps then refactorises a `k × k` matrix rather
//! than an `n × n` one (for `cnn-s` at 8×, `k = 302` against `n = 1,024`: 39× fewer flops in
//! the factorisation), and preparing `m` candidates costs `O(n·k·m)` instead of `O(n²·m)`.
//! For a kept column `Gᵢ` the identity simplifies exactly to `K⁻¹Gᵢ = G_S H⁻¹eᵢ`, which is
//! what is computed (no division by a small `μ`).

use faer::linalg::cholesky::llt::update::rank_r_update_clobber;
use faer::linalg::matmul::triangular::{BlockStructure, matmul};
use faer::linalg::solvers::Llt;
use faer::linalg::solvers::Solve;
use faer::linalg::triangular_solve::{solve_lower_triangular_in_place, solve_upper_triangular_in_place};
use faer::{Accum, Col, Mat, Par, Side};

use crate::grads::Gradients;

/// Columns (Woodbury path) or rows (direct path) of `G_S` converted to f64 at a time:
/// bounds the scratch to `CHUNK · max(n, k) · 8` bytes (4 MB for `n = 1024`).
const CHUNK: usize = 512;

/// The values `w_S` (one per entry of `support`, in its order) minimising
/// `½‖G(w − w̄)‖² + (μ/2)‖w − w̄‖²` over `w` with `w_j = 0` for `j ∉ S`.
///
/// `support` lists distinct columns of `g`; `wbar` has one value per column.
///
/// # Errors
/// When the ridge system is not positive definite (only possible with `μ = 0`) or the
/// solution is not finite.
pub fn ridge_on_support(g: &Gradients<'_>, wbar: &[f64], support: &[usize], mu: f64) -> Result<Vec<f64>, String> {
    let (n, k) = (g.rows(), support.len());
    let w = if k == 0 {
        Vec::new()
    } else if k <= n {
        direct(g, wbar, support, mu)?
    } else {
        SampleSystem::new(g, wbar, support, mu)?.values()
    };
    if w.iter().any(|v| !v.is_finite()) {
        return Err("the ridge back-solve produced a non-finite weight; raise lambda".into());
    }
    Ok(w)
}

/// `k ≤ n`: solve `(G_SᵀG_S + μI)·δ = G_Sᵀc`. `H` accumulates `RᵀR` over chunks `R` of rows
/// of `G_S` (lower triangle only, which is all the Cholesky reads).
fn direct(g: &Gradients<'_>, wbar: &[f64], support: &[usize], mu: f64) -> Result<Vec<f64>, String> {
    let (n, k) = (g.rows(), support.len());
    // c = G_{S̄}·w̄_{S̄}: zero the kept entries of w̄ and multiply.
    let mut pruned = wbar.to_vec();
    for &j in support {
        pruned[j] = 0.0;
    }
    let c = g.mul(&pruned);
    let mut h = Mat::<f64>::zeros(k, k);
    for t in 0..k {
        h[(t, t)] = mu;
    }
    for start in (0..n).step_by(CHUNK) {
        let rows = CHUNK.min(n - start);
        // Rᵀ (k × rows), column-major: column i is row start + i of G gathered on S,
        // so the gather reads each row of G in order.
        let rt = Mat::<f64>::from_fn(k, rows, |t, i| g.row(start + i)[support[t]] as f64);
        matmul(
            h.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            rt.as_ref(),
            BlockStructure::Rectangular,
            rt.transpose(),
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
    }
    let rhs = g.tmul_support(support, &c);
    let delta = solve_vec_l(&cholesky(&h)?, &rhs);
    Ok(support.iter().zip(delta).map(|(&j, d)| wbar[j] + d).collect())
}

/// How a [`SampleSystem`] applies `K⁻¹` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Factorise `K = G_SG_Sᵀ + μI` (`n × n`).
    Dual,
    /// Factorise `H = G_SᵀG_S + μI` (`k × k`) and apply `K⁻¹ = (I − G_S H⁻¹G_Sᵀ)/μ`.
    Primal,
}

impl Form {
    /// The cheaper form for `n` samples and `k` kept weights: primal when `k < n`.
    pub fn for_sizes(n: usize, k: usize) -> Form {
        if k < n { Form::Primal } else { Form::Dual }
    }
}

/// The factorisation behind a [`SampleSystem`].
#[derive(Debug, Clone)]
enum Inverse {
    /// Lower triangle of `K` (kept for rank updates) and its lower Cholesky factor `L`
    /// (updated in place by few swaps, refactorised from `K` after many).
    Dual { kmat: Mat<f64>, l: Mat<f64> },
    /// `G_S` in f64 (`n × k`, columns in support order), the lower triangle of `H` (kept for
    /// column updates) and its factor, and the optimal `δ = H⁻¹G_Sᵀc`.
    Primal { gs: Mat<f64>, hmat: Mat<f64>, llt: Llt<f64>, delta: Vec<f64> },
}

/// The back-solve for one support in the closed form of the module doc, kept factorised so
/// swaps can be scored and applied without rebuilding it.
#[derive(Debug, Clone)]
pub struct SampleSystem<'g, 'a> {
    g: &'g Gradients<'a>,
    wbar: &'g [f64],
    mu: f64,
    support: Vec<usize>,
    inverse: Inverse,
    /// `c = G_{S̄}·w̄_{S̄}`.
    c: Vec<f64>,
    /// `z = K⁻¹c`.
    z: Vec<f64>,
    /// `Σ_{j∉S} w̄ⱼ²`.
    pruned_sq: f64,
    /// Primal form: the last round's entering candidates, kept for the next.
    columns: ColumnCache,
}

/// Entering candidates of the primal form's swap rounds: each column `g_j` of `G` in f64 and
/// `G_Sᵀg_j` (slot order). Successive rounds mostly rank the same columns, and a round's
/// swaps change only the swapped slots of `G_Sᵀg_j` (`O(n)` each), where computing it anew
/// costs `O(n·k)`.
#[derive(Debug, Clone, Default)]
struct ColumnCache {
    columns: std::collections::HashMap<usize, (Vec<f64>, Vec<f64>)>,
}

impl<'g, 'a> SampleSystem<'g, 'a> {
    /// Builds and factorises the system for `support` (distinct columns) in the cheaper
    /// [`Form`]: `O(n²·k + n³)` dual, `O(n·k² + k³)` primal.
    ///
    /// # Errors
    /// When the system is not positive definite (only possible with `μ = 0`).
    pub fn new(g: &'g Gradients<'a>, wbar: &'g [f64], support: &[usize], mu: f64) -> Result<Self, String> {
        Self::with_form(g, wbar, support, mu, Form::for_sizes(g.rows(), support.len()))
    }

    /// [`SampleSystem::new`] in the given form.
    ///
    /// # Errors
    /// As [`SampleSystem::new`].
    pub fn with_form(
        g: &'g Gradients<'a>,
        wbar: &'g [f64],
        support: &[usize],
        mu: f64,
        form: Form,
    ) -> Result<Self, String> {
        let n = g.rows();
        let mut pruned = wbar.to_vec();
        for &j in support {
            pruned[j] = 0.0;
        }
        let pruned_sq = pruned.iter().map(|w| w * w).sum();
        let c = g.mul(&pruned);
        let (inverse, z) = match form {
            Form::Dual => {
                let mut kmat = gram_of_columns(g, support);
                for i in 0..n {
                    kmat[(i, i)] += mu;
                }
                let l = cholesky(&kmat)?;
                let z = solve_vec_l(&l, &c);
                (Inverse::Dual { kmat, l }, z)
            }
            Form::Primal => {
                // G_Sᵀ (k × n) filled column by column, i.e. row by row of G, then transposed.
                let gs =
                    Mat::<f64>::from_fn(support.len(), n, |t, i| g.row(i)[support[t]] as f64).transpose().to_owned();
                let mut h = Mat::<f64>::zeros(support.len(), support.len());
                matmul(
                    h.as_mut(),
                    BlockStructure::TriangularLower,
                    Accum::Replace,
                    gs.transpose(),
                    BlockStructure::Rectangular,
                    gs.as_ref(),
                    BlockStructure::Rectangular,
                    1.0,
                    Par::Seq,
                );
                for t in 0..support.len() {
                    h[(t, t)] += mu;
                }
                primal(gs, h, &c, mu)?
            }
        };
        let columns = ColumnCache::default();
        Ok(SampleSystem { g, wbar, mu, support: support.to_vec(), inverse, c, z, pruned_sq, columns })
    }

    /// The form this system was built in.
    pub fn form(&self) -> Form {
        match self.inverse {
            Inverse::Dual { .. } => Form::Dual,
            Inverse::Primal { .. } => Form::Primal,
        }
    }

    /// The support, in the order [`SampleSystem::values`] follows.
    pub fn support(&self) -> &[usize] {
        &self.support
    }

    /// `F(S)`: the objective at the optimum on the support.
    pub fn objective(&self) -> f64 {
        let czk: f64 = self.c.iter().zip(&self.z).map(|(a, b)| a * b).sum();
        0.5 * self.mu * (czk + self.pruned_sq)
    }

    /// The optimal `w_S = w̄_S + G_Sᵀz`, one value per support entry.
    pub fn values(&self) -> Vec<f64> {
        let delta = match &self.inverse {
            Inverse::Dual { .. } => self.g.tmul_support(&self.support, &self.z),
            Inverse::Primal { delta, .. } => delta.clone(),
        };
        self.support.iter().zip(delta).map(|(&j, d)| self.wbar[j] + d).collect()
    }

    /// The residual `G(w − w̄) = G_Sδ − c = −μz` at the optimum.
    pub fn residual(&self) -> Vec<f64> {
        self.z.iter().map(|z| -self.mu * z).collect()
    }

    /// Prepares swap scoring between `outs` (in the support) and `ins` (not in it): with
    /// `U = [a; e]` their columns, `Uᵀz`, the diagonal of `Q = UᵀK⁻¹U` and its outs × ins
    /// block, which is all [`SampleSystem::pair_delta`] reads; the few other entries
    /// [`SampleSystem::batch_delta`] needs are formed on demand from the factors kept here.
    ///
    /// Dual form: `K = LLᵀ`, so `Q = VᵀV` with `V = L⁻¹U`, one triangular solve
    /// (`O(n²·m)`, half of applying `K⁻¹`) and `O(n·a·|ins|)` for the block.
    ///
    /// The primal form never applies `K⁻¹` to an `n`-vector. With `A = G_{outs}` (kept, so
    /// `A = G_S·E` for unit columns `E` at their slots), `B = G_SᵀG_{ins}`, `H = L_HL_Hᵀ`,
    /// `V = L_H⁻¹E` and `W = L_H⁻¹B`, the identities `G_SᵀG_S = H − μI` and
    /// `G_SᵀK⁻¹ = H⁻¹G_Sᵀ` give `AᵀK⁻¹A = I − μ·VᵀV`, `AᵀK⁻¹G_{ins} = VᵀW`,
    /// `G_{ins}ᵀK⁻¹G_{ins} = (G_{ins}ᵀG_{ins} − WᵀW)/μ` and `Aᵀz = Eᵀδ`:
    /// `O(n·k·|ins| + k²·m)`, and the kept-kept block without cancellation.
    pub fn candidates(&mut self, outs: &[usize], ins: &[usize]) -> SwapCandidates {
        let n = self.g.rows();
        let (a, m) = (outs.len(), outs.len() + ins.len());
        let gather = |cols: &[usize]| Mat::<f64>::from_fn(cols.len(), n, |t, i| self.g.row(i)[cols[t]] as f64);
        let sq_norms = |v: &Mat<f64>| -> Vec<f64> {
            (0..v.ncols()).map(|t| (0..v.nrows()).map(|i| v[(i, t)] * v[(i, t)]).sum()).collect()
        };
        let (uz, diag, cross, factors) = match &self.inverse {
            Inverse::Dual { l, .. } => {
                let cols: Vec<usize> = outs.iter().chain(ins).copied().collect();
                // Columns of G for the candidates (n × m), read row by row through their
                // transpose.
                let gct = gather(&cols);
                let mut v = gct.transpose().to_owned();
                solve_lower_triangular_in_place(l.as_ref(), v.as_mut(), Par::Seq);
                let z = Mat::<f64>::from_fn(n, 1, |i, _| self.z[i]);
                let uz = gct.as_ref() * z.as_ref();
                let cross = v.subcols(0, a).transpose() * v.subcols(a, m - a);
                ((0..m).map(|t| uz[(t, 0)]).collect(), sq_norms(&v), cross, Factors::Dual { v })
            }
            Inverse::Primal { gs, llt, delta, .. } => {
                let slots: Vec<usize> = outs
                    .iter()
                    .map(|col| self.support.iter().position(|s| s == col).expect("removal candidates are kept"))
                    .collect();
                let lh = llt.L();
                // B = G_SᵀG_{ins}: the columns not cached from the last round in one product.
                let cache = &mut self.columns.columns;
                let missing: Vec<usize> = ins.iter().copied().filter(|j| !cache.contains_key(j)).collect();
                if !missing.is_empty() {
                    let et = gather(&missing);
                    let b = gs.transpose() * et.transpose();
                    for (t, &j) in missing.iter().enumerate() {
                        let col = (0..n).map(|i| et[(t, i)]).collect();
                        cache.insert(j, (col, (0..gs.ncols()).map(|r| b[(r, t)]).collect()));
                    }
                }
                cache.retain(|j, _| ins.contains(j));
                let cached: Vec<&(Vec<f64>, Vec<f64>)> = ins.iter().map(|j| &cache[j]).collect();
                let e = Mat::<f64>::from_fn(n, ins.len(), |i, t| cached[t].0[i]);
                let mut w = Mat::<f64>::from_fn(gs.ncols(), ins.len(), |r, t| cached[t].1[r]);
                solve_lower_triangular_in_place(lh, w.as_mut(), Par::Seq);
                let mut v = Mat::<f64>::from_fn(gs.ncols(), a, |r, t| if r == slots[t] { 1.0 } else { 0.0 });
                solve_lower_triangular_in_place(lh, v.as_mut(), Par::Seq);
                let cross = v.transpose() * w.as_ref();
                let mu = self.mu;
                let diag = sq_norms(&v)
                    .into_iter()
                    .map(|vv| 1.0 - mu * vv)
                    .chain(sq_norms(&e).into_iter().zip(sq_norms(&w)).map(|(ee, ww)| (ee - ww) / mu))
                    .collect();
                let z = Mat::<f64>::from_fn(n, 1, |i, _| self.z[i]);
                let ez = e.transpose() * z.as_ref();
                let uz = slots.iter().map(|&s| delta[s]).chain((0..ins.len()).map(|t| ez[(t, 0)])).collect();
                (uz, diag, cross, Factors::Primal { v, w, e, mu })
            }
        };
        SwapCandidates { outs: outs.to_vec(), ins: ins.to_vec(), uz, diag, cross, factors }
    }

    /// `F(S − outs[x] + ins[y]) − F(S)` of the single swap `(x, y)` (indices into the
    /// candidate lists): the 2 × 2 case of [`SampleSystem::batch_delta`] in closed form.
    pub fn pair_delta(&self, cand: &SwapCandidates, x: usize, y: usize) -> f64 {
        let a = cand.outs.len();
        let (i, j) = (cand.outs[x], cand.ins[y]);
        let (wi, wj) = (self.wbar[i], self.wbar[j]);
        let (az, ez) = (cand.uz[x], cand.uz[a + y]);
        let (aa, ee, ae) = (cand.diag[x], cand.diag[a + y], cand.cross[(x, y)]);
        // c'ᵀK⁻¹c' with c' = c + w̄ᵢa − w̄ⱼe.
        let ckc = 2.0 * wi * az - 2.0 * wj * ez + wi * wi * aa - 2.0 * wi * wj * ae + wj * wj * ee;
        let (v1, v2) = (az + wi * aa - wj * ae, ez + wi * ae - wj * ee);
        let (m00, m11) = (aa - 1.0, 1.0 + ee);
        let det = m00 * m11 - ae * ae;
        if !det.is_finite() || det.abs() <= 1e-12 * (m00.abs() * m11.abs() + ae * ae) {
            return f64::INFINITY;
        }
        let quad = (m11 * v1 * v1 - 2.0 * ae * v1 * v2 + m00 * v2 * v2) / det;
        0.5 * self.mu * (ckc - quad + wi * wi - wj * wj)
    }

    /// `F(S') − F(S)` for the support after all the swaps `(x, y)` (indices into the
    /// candidate lists; each used once), without refactorising: with `U` the swapped
    /// columns, `D = diag(−1 for removals, +1 for additions)`, `K' = K + UDUᵀ` and
    /// `c' = c + Ut` (`t` = `w̄ᵢ` for removals, `−w̄ⱼ` for additions), Woodbury gives
    /// `c'ᵀK'⁻¹c' = c'ᵀK⁻¹c' − vᵀ(D + UᵀK⁻¹U)⁻¹v`, `v = UᵀK⁻¹c'`: `O(m³)` for `m` swaps.
    pub fn batch_delta(&self, cand: &SwapCandidates, pairs: &[(usize, usize)]) -> f64 {
        let a = cand.outs.len();
        let idx: Vec<usize> = pairs.iter().map(|&(x, _)| x).chain(pairs.iter().map(|&(_, y)| a + y)).collect();
        let m = pairs.len();
        let col = |t: usize| if t < a { cand.outs[t] } else { cand.ins[t - a] };
        let t: Vec<f64> =
            idx.iter().enumerate().map(|(r, &c)| if r < m { self.wbar[col(c)] } else { -self.wbar[col(c)] }).collect();
        let qu = cand.block(&idx);
        let qt: Vec<f64> = (0..2 * m).map(|r| (0..2 * m).map(|c| qu[(r, c)] * t[c]).sum()).collect();
        let uz: Vec<f64> = idx.iter().map(|&c| cand.uz[c]).collect();
        let ckc: f64 = (0..2 * m).map(|r| 2.0 * t[r] * uz[r] + t[r] * qt[r]).sum();
        let mut v = Mat::<f64>::from_fn(2 * m, 1, |r, _| uz[r] + qt[r]);
        let v0: Vec<f64> = (0..2 * m).map(|r| v[(r, 0)]).collect();
        let mmat = Mat::<f64>::from_fn(2 * m, 2 * m, |r, c| {
            qu[(r, c)]
                + if r != c {
                    0.0
                } else if r < m {
                    -1.0
                } else {
                    1.0
                }
        });
        mmat.partial_piv_lu().solve_in_place(v.as_mut());
        let quad: f64 = (0..2 * m).map(|r| v0[r] * v[(r, 0)]).sum();
        let ridge: f64 = (0..m).map(|r| t[r] * t[r] - t[m + r] * t[m + r]).sum();
        let delta = 0.5 * self.mu * (ckc - quad + ridge);
        if delta.is_finite() { delta } else { f64::INFINITY }
    }

    /// The system after the swaps `(out column, in column)`. Dual: `K` updated by rank-1
    /// terms (`O(n²)` each) and its Cholesky factor too when the swaps are few (else
    /// refactorised, `O(n³)`), the support sorted; primal: the
    /// swapped rows and columns of `H` recomputed and `H` refactorised (`O(n·k·m + k³)`),
    /// each entering column in the place of the one it replaces, and the cached entering
    /// candidates (see [`SampleSystem::candidates`]) move to the new system, their swapped
    /// slots recomputed. This system stays valid; only its cache is emptied.
    ///
    /// # Errors
    /// When the updated `K` is not positive definite (rounding with a tiny ridge).
    pub fn with_swaps(&mut self, pairs: &[(usize, usize)]) -> Result<Self, String> {
        let n = self.g.rows();
        if let Inverse::Primal { gs, hmat, .. } = &self.inverse {
            // Each entering column takes the slot of the one it replaces (the support is then
            // no longer sorted); only the swapped rows and columns of H are recomputed:
            // O(n·k·m + k³) instead of O(n·k² + k³).
            let (mut gs, mut hmat, mut c) = (gs.clone(), hmat.clone(), self.c.clone());
            let mut support = self.support.clone();
            let mut pruned_sq = self.pruned_sq;
            let ins: Vec<usize> = pairs.iter().map(|&(_, j)| j).collect();
            let et = Mat::<f64>::from_fn(ins.len(), n, |t, i| self.g.row(i)[ins[t]] as f64);
            let mut slots = Vec::with_capacity(pairs.len());
            for (t, &(out, inn)) in pairs.iter().enumerate() {
                let slot = support.iter().position(|&s| s == out).expect("swapped-out columns are kept");
                let (wo, wi) = (self.wbar[out], self.wbar[inn]);
                for (i, ci) in c.iter_mut().enumerate() {
                    *ci += wo * gs[(i, slot)] - wi * et[(t, i)];
                    gs[(i, slot)] = et[(t, i)];
                }
                pruned_sq += wo * wo - wi * wi;
                support[slot] = inn;
                slots.push(slot);
            }
            let cross = gs.transpose() * et.transpose();
            for (t, &slot) in slots.iter().enumerate() {
                for r in 0..support.len() {
                    let v = cross[(r, t)] + if r == slot { self.mu } else { 0.0 };
                    hmat[(r.max(slot), r.min(slot))] = v;
                }
            }
            // The cached G_Sᵀg_j: only the swapped slots changed; entering columns leave.
            let mut columns = std::mem::take(&mut self.columns);
            columns.columns.retain(|j, _| !ins.contains(j));
            let mut cached: Vec<&mut (Vec<f64>, Vec<f64>)> = columns.columns.values_mut().collect();
            if !cached.is_empty() {
                let ec = Mat::<f64>::from_fn(n, cached.len(), |i, t| cached[t].0[i]);
                let rows = et.as_ref() * ec.as_ref();
                for (t, (_, b)) in cached.iter_mut().enumerate() {
                    for (r, &slot) in slots.iter().enumerate() {
                        b[slot] = rows[(r, t)];
                    }
                }
            }
            let (inverse, z) = primal(gs, hmat, &c, self.mu)?;
            let (g, wbar, mu) = (self.g, self.wbar, self.mu);
            return Ok(SampleSystem { g, wbar, mu, support, inverse, c, z, pruned_sq, columns });
        }
        let mut in_support = vec![false; self.wbar.len()];
        for &j in &self.support {
            in_support[j] = true;
        }
        let mut next = self.clone();
        let Inverse::Dual { kmat, l } = &mut next.inverse else { unreachable!("primal returned above") };
        // Columns leaving (A) and entering (E), read row by row through their transposes.
        let at = Mat::<f64>::from_fn(pairs.len(), n, |t, i| self.g.row(i)[pairs[t].0] as f64);
        let et = Mat::<f64>::from_fn(pairs.len(), n, |t, i| self.g.row(i)[pairs[t].1] as f64);
        for (mat, sign) in [(&et, 1.0), (&at, -1.0)] {
            matmul(
                kmat.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Add,
                mat.transpose(),
                BlockStructure::Rectangular,
                mat.as_ref(),
                BlockStructure::Rectangular,
                sign,
                Par::Seq,
            );
        }
        for (t, &(out, inn)) in pairs.iter().enumerate() {
            let (wo, wi) = (self.wbar[out], self.wbar[inn]);
            for (i, c) in next.c.iter_mut().enumerate() {
                *c += wo * at[(t, i)] - wi * et[(t, i)];
            }
            next.pruned_sq += wo * wo - wi * wi;
            in_support[out] = false;
            in_support[inn] = true;
        }
        next.support = (0..self.wbar.len()).filter(|&j| in_support[j]).collect();
        // A few swaps: update `L` by the rank-1 terms (`O(n²)` each, additions first so every
        // step stays positive definite); many, or an update that fails: refactorise `K`.
        let updated = RANK_UPDATE_PER_N * 2 * pairs.len() <= n && {
            let mut w = Mat::<f64>::from_fn(n, 2 * pairs.len(), |i, c| {
                if c < pairs.len() { et[(c, i)] } else { at[(c - pairs.len(), i)] }
            });
            let mut alpha = Col::<f64>::from_fn(2 * pairs.len(), |c| if c < pairs.len() { 1.0 } else { -1.0 });
            rank_r_update_clobber(l.as_mut(), w.as_mut(), alpha.as_diagonal_mut()).is_ok()
        };
        if !updated {
            *l = cholesky(kmat)?;
        }
        next.z = solve_vec_l(l, &next.c);
        Ok(next)
    }
}

/// Swap candidates prepared by [`SampleSystem::candidates`].
#[derive(Debug, Clone)]
pub struct SwapCandidates {
    /// Columns that may leave the support.
    pub outs: Vec<usize>,
    /// Columns that may enter it.
    pub ins: Vec<usize>,
    /// `Uᵀz` for the candidate columns `U = [a; e]` (outs first).
    uz: Vec<f64>,
    /// The diagonal of `Q = UᵀK⁻¹U`.
    diag: Vec<f64>,
    /// The outs × ins block of `Q`.
    cross: Mat<f64>,
    /// What any block of `Q` is formed from.
    factors: Factors,
}

/// What blocks of `Q` are formed from (see [`SampleSystem::candidates`]); the diagonal and
/// the outs × ins block are kept formed.
#[derive(Debug, Clone)]
enum Factors {
    /// `Q = VᵀV`, `V = L⁻¹U` (`n × m`).
    Dual { v: Mat<f64> },
    /// `V = L_H⁻¹E` (`k × |outs|`), `W = L_H⁻¹B` (`k × |ins|`), `G_{ins}` (`n × |ins|`).
    Primal { v: Mat<f64>, w: Mat<f64>, e: Mat<f64>, mu: f64 },
}

impl SwapCandidates {
    /// `Q[idx, idx]` (indices into outs, then ins) from the factors, by matrix products.
    fn block(&self, idx: &[usize]) -> Mat<f64> {
        let a = self.outs.len();
        let pick = |x: &Mat<f64>, cols: &[usize]| Mat::<f64>::from_fn(x.nrows(), cols.len(), |i, t| x[(i, cols[t])]);
        match &self.factors {
            Factors::Dual { v } => {
                let sel = pick(v, idx);
                sel.transpose() * sel.as_ref()
            }
            Factors::Primal { v, w, e, mu } => {
                // Where each entry of idx sits among the selected outs (or ins).
                let (mut outs, mut ins, mut at) = (Vec::new(), Vec::new(), Vec::with_capacity(idx.len()));
                for &r in idx {
                    if r < a {
                        at.push((true, outs.len()));
                        outs.push(r);
                    } else {
                        at.push((false, ins.len()));
                        ins.push(r - a);
                    }
                }
                let (vo, wi, ei) = (pick(v, &outs), pick(w, &ins), pick(e, &ins));
                let oo = vo.transpose() * vo.as_ref();
                let oi = vo.transpose() * wi.as_ref();
                let ii = ei.transpose() * ei.as_ref() - wi.transpose() * wi.as_ref();
                Mat::<f64>::from_fn(idx.len(), idx.len(), |r, c| match (at[r], at[c]) {
                    ((true, x), (true, y)) => f64::from(u8::from(x == y)) - mu * oo[(x, y)],
                    ((true, x), (false, y)) | ((false, y), (true, x)) => oi[(x, y)],
                    ((false, x), (false, y)) => ii[(x, y)] / mu,
                })
            }
        }
    }
}

/// Lower triangle of `G_SG_Sᵀ` (`n × n`), accumulated over chunks of columns of `G_S`,
/// split over a few threads (each with its own accumulator) when large.
fn gram_of_columns(g: &Gradients<'_>, support: &[usize]) -> Mat<f64> {
    let n = g.rows();
    let chunks: Vec<&[usize]> = support.chunks(CHUNK).collect();
    let threads = if n * n * support.len() < 1 << 24 {
        1
    } else {
        hyperprune_sdk::available_threads().clamp(1, 4).min(chunks.len())
    };
    let accumulate = |mine: &mut Mat<f64>, t: usize| {
        for cols in chunks.iter().skip(t).step_by(threads) {
            // Cᵀ (chunk × n), column-major: column i is row i of G gathered on the chunk.
            let ct = Mat::<f64>::from_fn(cols.len(), n, |t, i| g.row(i)[cols[t]] as f64);
            matmul(
                mine.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Add,
                ct.transpose(),
                BlockStructure::Rectangular,
                ct.as_ref(),
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
        }
    };
    if threads <= 1 {
        let mut k = Mat::<f64>::zeros(n, n);
        accumulate(&mut k, 0);
        return k;
    }
    let parts: Vec<Mat<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let accumulate = &accumulate;
                scope.spawn(move || {
                    let mut k = Mat::<f64>::zeros(n, n);
                    accumulate(&mut k, t);
                    k
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap_or_else(|| Mat::zeros(n, n));
    for part in parts {
        total += part;
    }
    total
}

/// The primal [`Inverse`] from `G_S` and the lower triangle of `H`, and `z = K⁻¹c`:
/// `δ = H⁻¹G_Sᵀc`, `z = (c − G_Sδ)/μ`.
fn primal(gs: Mat<f64>, hmat: Mat<f64>, c: &[f64], mu: f64) -> Result<(Inverse, Vec<f64>), String> {
    let (n, k) = (gs.nrows(), gs.ncols());
    let llt = factor(&hmat)?;
    let cm = Mat::<f64>::from_fn(n, 1, |i, _| c[i]);
    let mut delta = gs.transpose() * cm.as_ref();
    llt.solve_in_place(delta.as_mut());
    let fit = gs.as_ref() * delta.as_ref();
    let z = (0..n).map(|i| (c[i] - fit[(i, 0)]) / mu).collect();
    let delta = (0..k).map(|t| delta[(t, 0)]).collect();
    Ok((Inverse::Primal { gs, hmat, llt, delta }, z))
}

/// A swap round with `m` swaps updates the dual factor in place (`2m` rank-1 terms) when
/// `RANK_UPDATE_PER_N · 2m ≤ n`, else refactorises: the blocked factorisation does more
/// flops per second than the rank-1 updates, so it wins for many swaps.
const RANK_UPDATE_PER_N: usize = 16;

/// The lower Cholesky factor of `a` (lower triangle read).
fn cholesky(a: &Mat<f64>) -> Result<Mat<f64>, String> {
    Ok(factor(a)?.L().to_owned())
}

/// `(LLᵀ)⁻¹b` for a lower Cholesky factor `L`.
fn solve_vec_l(l: &Mat<f64>, b: &[f64]) -> Vec<f64> {
    let mut rhs = Mat::<f64>::from_fn(b.len(), 1, |i, _| b[i]);
    solve_lower_triangular_in_place(l.as_ref(), rhs.as_mut(), Par::Seq);
    solve_upper_triangular_in_place(l.transpose(), rhs.as_mut(), Par::Seq);
    (0..b.len()).map(|i| rhs[(i, 0)]).collect()
}

fn factor(a: &Mat<f64>) -> Result<Llt<f64>, String> {
    a.llt(Side::Lower)
        .map_err(|e| format!("the ridge back-solve's system is not positive definite ({e:?}); use lambda > 0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::rng::SplitMix64;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// Gaussian elimination with partial pivoting: an independent solver for the check,
    /// written with indices as in the textbook.
    #[allow(clippy::needless_range_loop)]
    fn gauss(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let m = b.len();
        for col in 0..m {
            let piv = (col..m).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs())).unwrap();
            a.swap(col, piv);
            b.swap(col, piv);
            for row in col + 1..m {
                let f = a[row][col] / a[col][col];
                for c in col..m {
                    a[row][c] -= f * a[col][c];
                }
                b[row] -= f * b[col];
            }
        }
        let mut x = vec![0.0; m];
        for row in (0..m).rev() {
            let s: f64 = (row + 1..m).map(|c| a[row][c] * x[c]).sum();
            x[row] = (b[row] - s) / a[row][row];
        }
        x
    }

    /// The k × k normal equations `(G_SᵀG_S + μI)w_S = G_Sᵀ(G w̄) + μ w̄_S`, formed
    /// element by element and solved by elimination.
    fn reference(data: &[f32], n: usize, p: usize, wbar: &[f64], support: &[usize], mu: f64) -> Vec<f64> {
        let at = |i: usize, j: usize| data[i * p + j] as f64;
        let b: Vec<f64> = (0..n).map(|i| (0..p).map(|j| at(i, j) * wbar[j]).sum()).collect();
        let a: Vec<Vec<f64>> = support
            .iter()
            .map(|&s| {
                support
                    .iter()
                    .map(|&t| (0..n).map(|i| at(i, s) * at(i, t)).sum::<f64>() + if s == t { mu } else { 0.0 })
                    .collect()
            })
            .collect();
        let rhs: Vec<f64> =
            support.iter().map(|&s| (0..n).map(|i| at(i, s) * b[i]).sum::<f64>() + mu * wbar[s]).collect();
        gauss(a, rhs)
    }

    fn check(n: usize, p: usize, k: usize, seed: u64) {
        let data = random(n * p, seed);
        let g = Gradients::new(&data, n, p).unwrap();
        let wbar: Vec<f64> = random(p, seed + 100).into_iter().map(f64::from).collect();
        let mut rng = SplitMix64::new(seed + 7);
        let mut idx: Vec<usize> = (0..p).collect();
        for i in 0..k {
            let j = i + (rng.next_u64() % (p - i) as u64) as usize;
            idx.swap(i, j);
        }
        let mut support = idx[..k].to_vec();
        support.sort_unstable();
        let mu = 0.3;
        let got = ridge_on_support(&g, &wbar, &support, mu).unwrap();
        let want = reference(&data, n, p, &wbar, &support, mu);
        // Both are f64 solves of systems of size ≤ 60 with condition number below ~10⁴
        // (μ = 0.3 against entries of G in [-1, 1]): agreement to 1e-9 leaves a margin of
        // 10⁴ over the expected ~1e-13.
        for (t, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "n={n} k={k} entry {t}: {a} vs {b}");
        }
    }

    #[test]
    fn direct_path_matches_the_normal_equations_when_k_le_n() {
        for seed in 0..3 {
            check(40, 70, 25, seed);
            check(30, 50, 30, seed + 10);
        }
    }

    #[test]
    fn woodbury_path_matches_the_normal_equations_when_n_lt_k() {
        for seed in 0..3 {
            check(12, 70, 50, seed);
            check(5, 40, 6, seed + 10);
        }
    }

    #[test]
    fn both_forms_give_the_normal_equations_optimum() {
        for (n, p, k, seed) in [(6, 20, 8, 1u64), (15, 30, 10, 2), (40, 70, 25, 3)] {
            let data = random(n * p, seed);
            let g = Gradients::new(&data, n, p).unwrap();
            let wbar: Vec<f64> = random(p, seed + 50).into_iter().map(f64::from).collect();
            let support: Vec<usize> = (0..p).filter(|j| j % 3 != 1).take(k).collect();
            let want = reference(&data, n, p, &wbar, &support, 0.3);
            for form in [Form::Dual, Form::Primal] {
                let sys = SampleSystem::with_form(&g, &wbar, &support, 0.3, form).unwrap();
                assert_eq!(sys.form(), form);
                // Tolerance as in `check`.
                for (t, (a, b)) in sys.values().iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "{form:?} n={n} k={k} entry {t}: {a} vs {b}");
                }
            }
        }
        assert_eq!(Form::for_sizes(1024, 302), Form::Primal);
        assert_eq!(Form::for_sizes(1024, 1024), Form::Dual);
    }

    #[test]
    fn swap_scores_equal_the_objective_change_of_a_rebuilt_system() {
        // Both forms on each problem, k > n and k < n alike; the rebuilt reference is dual.
        // With n = 40 a single swap updates the dual factor in place (RANK_UPDATE_PER_N).
        let cases = [(6, 20, 8, 1u64), (15, 30, 10, 2), (4, 12, 3, 3), (40, 70, 45, 4)];
        for ((n, p, k, seed), form) in cases.into_iter().flat_map(|c| [(c, Form::Dual), (c, Form::Primal)]) {
            let data = random(n * p, seed);
            let g = Gradients::new(&data, n, p).unwrap();
            let wbar: Vec<f64> = random(p, seed + 50).into_iter().map(f64::from).collect();
            let support: Vec<usize> = (0..p).filter(|j| j % 3 != 1).take(k).collect();
            let mu = 0.2;
            let fresh_of = |s: &[usize]| SampleSystem::with_form(&g, &wbar, s, mu, Form::Dual).unwrap().objective();
            let mut sys = SampleSystem::with_form(&g, &wbar, &support, mu, form).unwrap();
            // F(S) in closed form equals f at the optimal values.
            let mut w = vec![0.0; p];
            for (&j, v) in support.iter().zip(sys.values()) {
                w[j] = v;
            }
            let r: Vec<f64> = g.mul(&w.iter().zip(&wbar).map(|(a, b)| a - b).collect::<Vec<_>>());
            let f = 0.5 * r.iter().map(|x| x * x).sum::<f64>()
                + 0.5 * mu * w.iter().zip(&wbar).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
            // Two f64 evaluations of a value of order 1: 1e-10 relative covers rounding.
            assert!((sys.objective() - f).abs() <= 1e-10 * f.abs().max(1.0), "{} vs {f}", sys.objective());
            let outs: Vec<usize> = support.iter().copied().step_by(2).collect();
            let ins: Vec<usize> = (0..p).filter(|j| !support.contains(j)).collect();
            let cand = sys.clone().candidates(&outs, &ins);
            // Woodbury updates of a system with condition number < 10⁴: 1e-8 relative to F
            // is a wide margin over the ~1e-12 expected.
            let tol = 1e-8 * sys.objective().abs().max(1.0);
            for (x, &i) in outs.iter().enumerate() {
                for (y, &j) in ins.iter().enumerate() {
                    let rebuilt = sys.with_swaps(&[(i, j)]).unwrap();
                    assert_eq!(rebuilt.form(), form);
                    let mut swapped: Vec<usize> = support.iter().copied().filter(|&s| s != i).chain([j]).collect();
                    swapped.sort_unstable();
                    let mut got = rebuilt.support().to_vec();
                    got.sort_unstable();
                    assert_eq!(got, swapped);
                    let fresh = fresh_of(&swapped);
                    let want = fresh - sys.objective();
                    let (pair, batch) = (sys.pair_delta(&cand, x, y), sys.batch_delta(&cand, &[(x, y)]));
                    assert!((pair - want).abs() <= tol, "{form:?} swap {i}->{j}: {pair} vs {want}");
                    assert!((batch - want).abs() <= tol, "{form:?} batch of one {i}->{j}: {batch} vs {want}");
                    assert!((rebuilt.objective() - fresh).abs() <= tol, "{form:?} updated system {i}->{j}");
                }
            }
            // A batch of disjoint swaps against a system rebuilt on the final support.
            let pairs: Vec<(usize, usize)> =
                (0..outs.len().min(ins.len()).min(3)).map(|t| (t, ins.len() - 1 - t)).collect();
            let cols: Vec<(usize, usize)> = pairs.iter().map(|&(x, y)| (outs[x], ins[y])).collect();
            let after = sys.with_swaps(&cols).unwrap();
            let fresh = fresh_of(after.support());
            let batch = sys.batch_delta(&cand, &pairs);
            assert!((batch - (fresh - sys.objective())).abs() <= tol, "batch: {batch} vs {}", fresh - sys.objective());
            assert!((after.objective() - fresh).abs() <= tol, "batch-updated system");
            // The updated system's values follow its own support order.
            let rebuilt = SampleSystem::with_form(&g, &wbar, after.support(), mu, Form::Dual).unwrap();
            for (t, (x, y)) in after.values().iter().zip(rebuilt.values()).enumerate() {
                assert!((x - y).abs() <= 1e-8 * (1.0 + y.abs()), "{form:?} value {t}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn cached_entering_columns_score_as_a_fresh_system_does() {
        // Primal (k < n): a round fills the column cache, swaps update it, and the next
        // round's scores must equal those of a system built anew on the new support (in the
        // same slot order), for cached columns, new ones and columns that just left.
        let (n, p, k, mu) = (40, 90, 25, 0.3);
        let data = random(n * p, 11);
        let g = Gradients::new(&data, n, p).unwrap();
        let wbar: Vec<f64> = random(p, 12).into_iter().map(f64::from).collect();
        let support: Vec<usize> = (0..p).step_by(3).take(k).collect();
        let mut sys = SampleSystem::with_form(&g, &wbar, &support, mu, Form::Primal).unwrap();
        let outs: Vec<usize> = support[..6].to_vec();
        let ins: Vec<usize> = (0..p).filter(|j| !support.contains(j)).take(20).collect();
        sys.candidates(&outs, &ins);
        assert_eq!(sys.columns.columns.len(), ins.len());
        let mut after = sys.with_swaps(&[(outs[0], ins[0]), (outs[1], ins[1])]).unwrap();
        assert_eq!(after.columns.columns.len(), ins.len() - 2, "entered columns leave the cache");
        let outs2: Vec<usize> = vec![ins[0], outs[2], outs[3]];
        let ins2: Vec<usize> = ins[2..].iter().copied().chain([outs[0], outs[1]]).chain([p - 1]).collect();
        let got = after.candidates(&outs2, &ins2);
        let mut fresh = SampleSystem::with_form(&g, &wbar, after.support(), mu, Form::Primal).unwrap();
        let want = fresh.candidates(&outs2, &ins2);
        // The same quantities by different association orders: 1e-9 relative to F.
        let tol = 1e-9 * fresh.objective().abs().max(1.0);
        for (x, i) in outs2.iter().enumerate() {
            for (y, j) in ins2.iter().enumerate() {
                let (a, b) = (after.pair_delta(&got, x, y), fresh.pair_delta(&want, x, y));
                assert!((a - b).abs() <= tol, "swap {i} -> {j}: {a} vs {b}");
            }
        }
        let pairs = [(0, 0), (1, 5), (2, ins2.len() - 1)];
        let (a, b) = (after.batch_delta(&got, &pairs), fresh.batch_delta(&want, &pairs));
        assert!((a - b).abs() <= tol, "batch: {a} vs {b}");
    }

    #[test]
    fn woodbury_crosses_chunk_boundaries() {
        // k > CHUNK exercises the accumulation over column chunks. The element-wise reference
        // would be slow at this size, so check optimality instead: the gradient on S,
        // G_Sᵀ(G_S δ − c) + μ δ, vanishes.
        let (n, p, k) = (20, 1200, 600);
        let data = random(n * p, 3);
        let g = Gradients::new(&data, n, p).unwrap();
        let wbar: Vec<f64> = random(p, 4).into_iter().map(f64::from).collect();
        let support: Vec<usize> = (0..p).step_by(2).take(k).collect();
        let got = ridge_on_support(&g, &wbar, &support, 0.5).unwrap();
        let c = g.mul(&(0..p).map(|j| if j % 2 == 0 { 0.0 } else { wbar[j] }).collect::<Vec<_>>());
        let delta: Vec<f64> = support.iter().zip(&got).map(|(&j, w)| w - wbar[j]).collect();
        let mut r = g.mul_support(&support, &delta);
        for (ri, ci) in r.iter_mut().zip(&c) {
            *ri -= ci;
        }
        let grad = g.tmul_support(&support, &r);
        let scale: f64 = delta.iter().map(|d| d.abs()).fold(0.0, f64::max).max(1.0);
        for (t, (gr, d)) in grad.iter().zip(&delta).enumerate() {
            // The gradient sums n·k = 1.2·10⁴ products of size ≤ max|δ|, so f64 rounding is
            // ~1e-12·max|δ|; 1e-10 relative to n·k·max|δ| leaves a margin of 10⁶.
            assert!((gr + 0.5 * d).abs() < 1e-10 * scale * (n * k) as f64, "entry {t}");
        }
    }
}

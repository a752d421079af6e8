# Times the authors' CHITA solvers (mazumder-lab/CHITA, CHITA_opt/L0_card_const.py, run
# unmodified from a checkout named by $CHITA_REF) on a problem dumped by our chita plugin (see
# README.md), and reports the objective both minimise.
# usage: python solver.py DUMP_DIR COMPRESSIONS [ITERATIONS]
import os, sys, time, numpy as np
sys.path.insert(0, os.environ['CHITA_REF'])
from CHITA_opt.L0_card_const import Active_IHTCDLS_PP, Heuristic_LS

d = sys.argv[1]
n, p = map(int, open(d + '/shape').read().split())
mu = float(open(d + '/mu').read())
G = np.fromfile(d + '/g.f32', dtype=np.float32).reshape(n, p).astype(np.float64)
w1 = np.fromfile(d + '/w.f64')
lambda2 = mu / 2  # their 0.5||y - X b||^2 + lambda2 ||b - b~||^2 is our f with mu = 2 lambda2
y = G @ w1
zeros = np.zeros_like(w1)

def f(w):
    r = G @ (w - w1)
    return 0.5 * r @ r + 0.5 * mu * (w - w1) @ (w - w1)

comps = [int(c) for c in sys.argv[2].split(',')]
iters = int(sys.argv[3]) if len(sys.argv) > 3 else 25
for comp in comps:
    pruned = int(round(p * (1 - 1 / comp)))
    k = p - pruned
    for algo in ['Active_IHTCDLS', 'Heuristic_LS']:
        times = []
        for rep in range(2):  # the first call compiles (numba); time the second
            t = time.perf_counter()
            if algo == 'Active_IHTCDLS':
                w, obj, *_ = Active_IHTCDLS_PP(y, G, w1.copy(), k, alpha=zeros, lambda1=0, lambda2=lambda2, M=np.inf,
                    beta_tilde1=zeros, beta_tilde2=w1, L=None, iht_max_itr=iters, ftol=1e-7, act_max_itr=iters,
                    buget=None, kimp=1.5, act_itr=1, cd_itr=0, ctol=1e-4, sea1_max_itr=5, sea2_max_itr=10)
            else:
                w, obj, *_ = Heuristic_LS(y, G, w1.copy(), k, alpha=zeros, lambda1=0, lambda2=lambda2, M=np.inf,
                    beta_tilde1=zeros, beta_tilde2=w1, use_prune=True)
            times.append(time.perf_counter() - t)
        print(f"{comp}x k={k} {algo}: {times[1]:.3f} s (first call {times[0]:.3f} s), nnz {int((w != 0).sum())}, objective {f(w):.6e}", flush=True)

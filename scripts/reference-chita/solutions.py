# Runs the authors' two CHITA solvers on a dumped problem and writes each solution into a copy
# of the member's safetensors (prunable weights = the conv/linear weights in layer order), for
# `hyperprune eval`. usage: python solutions.py DUMP_DIR MEMBER.safetensors OUT_DIR COMPRESSIONS
import os, sys, json, struct, numpy as np
sys.path.insert(0, os.environ['CHITA_REF'])
from CHITA_opt.L0_card_const import Active_IHTCDLS_PP, Heuristic_LS
d, member, outdir = sys.argv[1], sys.argv[2], sys.argv[3]
comps = [int(c) for c in sys.argv[4].split(',')]
n, p = map(int, open(d + '/shape').read().split())
mu = float(open(d + '/mu').read())
G = np.fromfile(d + '/g.f32', dtype=np.float32).reshape(n, p).astype(np.float64)
w1 = np.fromfile(d + '/w.f64'); y = G @ w1; zeros = np.zeros_like(w1)
raw = open(member, 'rb').read(); hl = struct.unpack('<Q', raw[:8])[0]; header = json.loads(raw[8:8 + hl]); body = raw[8 + hl:]
names = sorted([k for k in header if k.endswith('.weight')], key=lambda k: int(k.split('.')[0]))
for comp in comps:
    k = p - int(round(p * (1 - 1 / comp)))
    for algo in ['Active_IHTCDLS', 'Heuristic_LS']:
        if algo == 'Active_IHTCDLS':
            w, *_ = Active_IHTCDLS_PP(y, G, w1.copy(), k, alpha=zeros, lambda1=0, lambda2=mu / 2, M=np.inf, beta_tilde1=zeros,
                beta_tilde2=w1, L=None, iht_max_itr=25, ftol=1e-7, act_max_itr=25, buget=None, kimp=1.5, act_itr=1, cd_itr=0,
                ctol=1e-4, sea1_max_itr=5, sea2_max_itr=10)
        else:
            w, *_ = Heuristic_LS(y, G, w1.copy(), k, alpha=zeros, lambda1=0, lambda2=mu / 2, M=np.inf, beta_tilde1=zeros,
                beta_tilde2=w1, use_prune=True)
        new = bytearray(body); off = 0
        for name in names:
            a, b = header[name]['data_offsets']; cnt = (b - a) // 4
            new[a:b] = w[off:off + cnt].astype('<f4').tobytes(); off += cnt
        assert off == p
        open(f'{outdir}/{algo}-{comp}.safetensors', 'wb').write(raw[:8 + hl] + bytes(new))
        print(comp, algo, int((w != 0).sum()), flush=True)

# End-to-end time of the authors' CHITA class (pruners/CHITA.py, unmodified, from a checkout
# named by $CHITA_REF) on one of our cnn-s members (tanh): per-sample gradients in PyTorch
# (their loop, batch size 1) + their solver, three passes.
# usage: python whole_call.py MEMBER.safetensors DUMP_DIR/mu COMPRESSIONS
import os, sys, time, json, struct, gzip, numpy as np, torch, torch.nn as nn
sys.path.insert(0, os.environ['CHITA_REF'])
from pruners.CHITA import CHITA
torch.manual_seed(0)
member, mu_file = sys.argv[1], sys.argv[2]
comps = [int(c) for c in sys.argv[3].split(',')]
act = nn.Tanh
model = nn.Sequential(nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), act(), nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), act(),
                      nn.Conv2d(6, 4, 2), act(), nn.Flatten(), nn.Linear(36, 20), act(), nn.Linear(20, 10))
raw = open(member, 'rb').read(); hl = struct.unpack('<Q', raw[:8])[0]; header = json.loads(raw[8:8 + hl]); body = raw[8 + hl:]
sd = {}
for k, v in header.items():
    if k == '__metadata__': continue
    a, b = v['data_offsets']; sd[k] = torch.from_numpy(np.frombuffer(body[a:b], dtype='<f4').copy().reshape(v['shape']))
model.load_state_dict(sd)
def idx(path):
    with gzip.open(path) as f: d = f.read()
    n = struct.unpack('>I', d[4:8])[0]
    return np.frombuffer(d[16:], dtype=np.uint8).reshape(n, 1, 28, 28)
x = idx('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz')
with gzip.open('/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz') as f: y = np.frombuffer(f.read()[8:], dtype=np.uint8)
sel = np.random.default_rng(0).permutation(len(y))[:1024]
ds = torch.utils.data.TensorDataset(torch.from_numpy(x[sel].astype(np.float32) / 255.0), torch.from_numpy(y[sel].astype(np.int64)))
loader = torch.utils.data.DataLoader(ds, batch_size=1, shuffle=False)
params = ['0.weight', '3.weight', '6.weight', '9.weight', '11.weight']
n = 1024
mu = float(open(mu_file).read())
l2 = mu / n  # their lambda2 = l2 * n / 2 is the regression ridge mu / 2
crit = nn.CrossEntropyLoss()
for rep in range(3):
    for comp in comps:
        dense = {k: v.clone() for k, v in model.state_dict().items()}
        pr = CHITA(model, params, loader, n, 1, crit, -1, l2, 25, False, False, 'cpu', algo='Active_IHTCDLS')
        t = time.perf_counter()
        w, mask = pr.prune(None, 1 - 1 / comp)
        total = time.perf_counter() - t
        print(f"RESULT pass {rep} {comp}x: total {total:.3f} s, solver {pr.results['prun_runtime']:.3f} s, nnz {int(mask.sum())}", flush=True)
        model.load_state_dict(dense)

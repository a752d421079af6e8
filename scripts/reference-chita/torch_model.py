# A PyTorch-trained cnn-s (the case: Fashion-MNIST, tanh, about 79 % dense), saved in
# hyperprune's model format, then pruned by the authors' CHITA class (pruners/CHITA.py,
# unmodified, from a checkout named by $CHITA_REF) at each compression and ridge; prints the
# test accuracy of every pruned-and-updated model.
# usage: python torch_model.py OUT.safetensors COMPRESSIONS L2S [EPOCHS]
#   e.g. python torch_model.py /tmp/torch-cnn-s.safetensors 4,8 1e-4,1e-3,1e-2 2
import os, sys, time, json, struct, gzip, numpy as np, torch, torch.nn as nn
sys.path.insert(0, os.environ['CHITA_REF'])
from pruners.CHITA import CHITA
from utils.main_utils import set_pvec

torch.manual_seed(0)
torch.set_num_threads(2)
out = sys.argv[1]
comps = [int(c) for c in sys.argv[2].split(',')]
l2s = [float(v) for v in sys.argv[3].split(',')]
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 2
root = '/usr/share/datasets/fashion-mnist'


def images(name):
    with gzip.open(f'{root}/{name}-images-idx3-ubyte.gz') as f:
        d = f.read()
    n = struct.unpack('>I', d[4:8])[0]
    return torch.from_numpy(np.frombuffer(d[16:], dtype=np.uint8).reshape(n, 1, 28, 28).astype(np.float32) / 255.0)


def labels(name):
    with gzip.open(f'{root}/{name}-labels-idx1-ubyte.gz') as f:
        return torch.from_numpy(np.frombuffer(f.read()[8:], dtype=np.uint8).astype(np.int64))


xtr, ytr, xte, yte = images('train'), labels('train'), images('t10k'), labels('t10k')
# cnn-s exactly as hyperprune's built-in spec (tensor names follow nn.Sequential indices).
model = nn.Sequential(nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), nn.Tanh(), nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), nn.Tanh(),
                      nn.Conv2d(6, 4, 2), nn.Tanh(), nn.Flatten(), nn.Linear(36, 20), nn.Tanh(), nn.Linear(20, 10))
crit = nn.CrossEntropyLoss()


@torch.no_grad()
def accuracy(m):
    m.eval()
    return sum((m(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, 10000, 1000)) / 10000


opt = torch.optim.Adam(model.parameters(), lr=1e-3)
t = time.perf_counter()
for epoch in range(epochs):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), 64):
        idx = perm[i:i + 64]
        opt.zero_grad()
        crit(model(xtr[idx]), ytr[idx]).backward()
        opt.step()
    print(f'epoch {epoch + 1}: test accuracy {accuracy(model):.4f} ({time.perf_counter() - t:.1f} s)', flush=True)
dense = accuracy(model)

# hyperprune's format: safetensors with the architecture in the metadata.
spec = {"name": "cnn-s", "input": [1, 28, 28], "classes": 10, "layers": [
    {"type": "conv2d", "out_channels": 8, "kernel": 5, "stride": 1, "padding": 0, "bias": True}, {"type": "maxpool", "kernel": 2},
    {"type": "tanh"}, {"type": "conv2d", "out_channels": 6, "kernel": 5, "stride": 1, "padding": 0, "bias": True},
    {"type": "maxpool", "kernel": 2}, {"type": "tanh"},
    {"type": "conv2d", "out_channels": 4, "kernel": 2, "stride": 1, "padding": 0, "bias": True}, {"type": "tanh"},
    {"type": "flatten"}, {"type": "linear", "out_features": 20, "bias": True}, {"type": "tanh"},
    {"type": "linear", "out_features": 10, "bias": True}]}
header, body = {"__metadata__": {"hyperprune.arch": json.dumps(spec)}}, b''
for k, v in model.state_dict().items():
    data = v.detach().numpy().astype('<f4').tobytes()
    header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(body), len(body) + len(data)]}
    body += data
hb = json.dumps(header).encode()
hb += b' ' * (-len(hb) % 8)
with open(out, 'wb') as f:
    f.write(struct.pack('<Q', len(hb)) + hb + body)
print(f'dense test accuracy {dense:.4f}; wrote {out}', flush=True)

params = ['0.weight', '3.weight', '6.weight', '9.weight', '11.weight']
n = 1024
sel = torch.from_numpy(np.random.default_rng(0).permutation(len(ytr))[:n])
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr[sel], ytr[sel]), batch_size=1, shuffle=False)
state = {k: v.clone() for k, v in model.state_dict().items()}
for l2 in l2s:
    for comp in comps:
        model.load_state_dict(state)
        pr = CHITA(model, params, loader, n, 1, crit, -1, l2, 25, False, False, 'cpu', algo='Active_IHTCDLS')
        w, mask = pr.prune(None, 1 - 1 / comp)
        set_pvec(w, model, params, 'cpu')
        acc = accuracy(model)
        print(f'RESULT reference Active_IHTCDLS l2={l2:g} {comp}x: test accuracy {acc:.4f} '
              f'(retention {100 * acc / dense:.1f} %), nnz {int(mask.sum())}', flush=True)

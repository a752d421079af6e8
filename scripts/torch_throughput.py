"""PyTorch CPU throughput of hyperprune's ResNet presets, the comparison figure for
`hyperprune bench-engine throughput --arch resnet20,resnet-s --engine burn`.

Architectures (as core/src/arch/resnet.rs builds them; 1x28x28 inputs, 10 classes):
  resnet20  depth 20 (three BasicBlocks a stage), width 16
  resnet-s  depth 8 (one BasicBlock a stage), width 8
Each is a CIFAR ResNet (He et al. 2016, section 4.2): 3x3 stem conv + batch norm + ReLU, three
stages at widths w, 2w, 4w (stride 2 entering stages 2 and 3), 1x1 conv + batch norm
projections where the shape changes, global average pooling, a linear classifier; no conv bias.

What is measured, per architecture, thread count and member count (as bench-engine does):
  train  member-images/s of training steps: forward, cross-entropy, backward and the optimiser
         update (Adam, lr 1e-3, as bench-engine; `--optimizer sgd` for plain SGD), mini-batch
         `--train-batch` (128), random images in [0, 1) and random labels; each member draws
         its own mini-batches (bench-engine's members have distinct seeds and data orders)
  infer  member-images/s of eval-mode forward passes at `--infer-batch` (256), no autograd
after `--warmup` untimed steps (2), for at least `--seconds` (3) and `--min-steps` (3) steps.

Members: bench-engine trains M independent members in one batched call. PyTorch has no such
call, so two ways are measured (`--mode`):
  sequential  M separate models, each taking its step in turn (what a user would write; the
              PyTorch column of docs/BENCHMARKS.md is this, "members one after another")
  grouped     one network whose every conv has M groups and M times the channels, per-channel
              batch norm over the M*C channels and a per-member linear layer (einsum): exactly M
              independent networks, each fed its own images, trained by one optimiser step on
              the sum of the members' mean losses (so each member's gradient is its own)
With M = 1 only `sequential` runs (the two are the same network).

GFLOP/s use an analytic count: forward FLOPs = 2 x (multiply-adds of every conv and of the
linear layer), batch norm, ReLU, additions and pooling not counted; a training step counts
3 x forward (the backward pass computes input and weight gradients, each as costly as the
forward). `--peak` instead times a square f32 matmul (2 n^3 FLOPs) as the machine's measured
peak; `hyperprune bench-engine` has no peak measurement of its own.

Output: a markdown table, or JSON lines with `--json`.

Run (needs torch; the CPU build is enough):
  python3 scripts/torch_throughput.py --threads 2 --members 1,8
  python3 scripts/torch_throughput.py --peak --threads 1,2
"""

import argparse
import json
import platform
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {
    "resnet20": dict(depth=20, width=16, input=(1, 28, 28), classes=10),
    "resnet-s": dict(depth=8, width=8, input=(1, 28, 28), classes=10),
}


def conv_out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def forward_flops(depth, width, input, classes):
    """2 x multiply-adds of one image's forward pass through every conv and the classifier."""
    cin, h, w = input
    macs = cin * width * 9 * h * w  # stem, stride 1, padding 1
    cin = width
    for stage in (1, 2, 3):
        cout = width << (stage - 1)
        for block in range((depth - 2) // 6):
            stride = 2 if stage > 1 and block == 0 else 1
            ho, wo = conv_out(h, 3, stride, 1), conv_out(w, 3, stride, 1)
            macs += cin * cout * 9 * ho * wo + cout * cout * 9 * ho * wo
            if stride != 1 or cin != cout:
                macs += cin * cout * ho * wo
            cin, h, w = cout, ho, wo
    macs += cin * classes
    return 2 * macs


class Block(nn.Module):
    """A BasicBlock of `m` independent members (channels member-major, conv groups = m)."""

    def __init__(self, cin, cout, stride, m):
        super().__init__()
        self.conv1 = nn.Conv2d(m * cin, m * cout, 3, stride, 1, groups=m, bias=False)
        self.bn1 = nn.BatchNorm2d(m * cout)
        self.conv2 = nn.Conv2d(m * cout, m * cout, 3, 1, 1, groups=m, bias=False)
        self.bn2 = nn.BatchNorm2d(m * cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(m * cin, m * cout, 1, stride, groups=m, bias=False),
                                            nn.BatchNorm2d(m * cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """`m` independent CIFAR ResNets in one module: input [B, m*C, H, W], logits [B, m, K]."""

    def __init__(self, depth, width, input, classes, m=1):
        super().__init__()
        self.m = m
        self.conv1 = nn.Conv2d(m * input[0], m * width, 3, 1, 1, groups=m, bias=False)
        self.bn1 = nn.BatchNorm2d(m * width)
        blocks, cin = [], width
        for stage in (1, 2, 3):
            cout = width << (stage - 1)
            for block in range((depth - 2) // 6):
                blocks.append(Block(cin, cout, 2 if stage > 1 and block == 0 else 1, m))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        bound = cin ** -0.5  # nn.Linear's default initialisation
        self.fc_weight = nn.Parameter(torch.empty(m, classes, cin).uniform_(-bound, bound))
        self.fc_bias = nn.Parameter(torch.empty(m, classes).uniform_(-bound, bound))

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1).view(x.shape[0], self.m, -1)
        return torch.einsum("bmc,mkc->bmk", x, self.fc_weight) + self.fc_bias


def optimiser(name, params):
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    return torch.optim.SGD(params, lr=1e-2)


def timed(step, warmup, seconds, min_steps):
    """Seconds per call of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < seconds:
        step()
        steps += 1
    return (time.perf_counter() - start) / steps


def measure(arch, mode, members, args):
    """(train, infer) member-images/s of `members` members of `arch` run in `mode`."""
    cfg = ARCHS[arch]
    c = cfg["input"][0]
    torch.manual_seed(0)
    pool = torch.rand(4096, *cfg["input"])
    labels = torch.randint(0, cfg["classes"], (4096,))
    grouped = mode == "grouped"
    nets = [ResNet(**cfg, m=members)] if grouped else [ResNet(**cfg) for _ in range(members)]
    opts = [optimiser(args.optimizer, net.parameters()) for net in nets]
    orders = [torch.randperm(len(pool)) for _ in range(members)]
    cursor = [0]

    def batch_indices(member, size):
        i = (cursor[0] * size) % (len(pool) - size + 1)
        return orders[member][i:i + size]

    def train_step():
        b = args.train_batch
        if grouped:
            idx = [batch_indices(j, b) for j in range(members)]
            x = torch.stack([pool[i] for i in idx], 1).view(b, members * c, *cfg["input"][1:])
            y = torch.stack([labels[i] for i in idx], 1)
            nets[0].train()
            opts[0].zero_grad(set_to_none=True)
            logits = nets[0](x)
            (F.cross_entropy(logits.reshape(-1, cfg["classes"]), y.reshape(-1)) * members).backward()
            opts[0].step()
        else:
            for j, (net, opt) in enumerate(zip(nets, opts)):
                i = batch_indices(j, b)
                net.train()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(pool[i])[:, 0], labels[i]).backward()
                opt.step()
        cursor[0] += 1

    def infer_step():
        b = args.infer_batch
        x = pool[:b]
        with torch.inference_mode():
            if grouped:
                nets[0].eval()
                nets[0](x.repeat(1, members, 1, 1))
            else:
                for net in nets:
                    net.eval()
                    net(x)

    train_s = timed(train_step, args.warmup, args.seconds, args.min_steps)
    infer_s = timed(infer_step, args.warmup, args.seconds, args.min_steps)
    return members * args.train_batch / train_s, members * args.infer_batch / infer_s


def peak(threads, n, args):
    a, b = torch.rand(n, n), torch.rand(n, n)
    s = timed(lambda: torch.mm(a, b), args.warmup, args.seconds, args.min_steps)
    return 2 * n ** 3 / s / 1e9


def counts(text):
    return [int(v) for v in text.split(",")]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default="resnet20,resnet-s", help="comma-separated: resnet20, resnet-s")
    p.add_argument("--threads", type=counts, default=[2], help="torch.set_num_threads values (2)")
    p.add_argument("--members", type=counts, default=[1, 8], help="member counts (1,8)")
    p.add_argument("--mode", default="sequential,grouped", help="how M > 1 members run (sequential,grouped)")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--min-steps", type=int, default=3)
    p.add_argument("--peak", action="store_true", help="time a square f32 matmul instead")
    p.add_argument("--peak-n", type=int, default=2048)
    p.add_argument("--json", action="store_true", help="JSON lines instead of a markdown table")
    args = p.parse_args()

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        if args.peak:
            rows.append(dict(measure="matmul", n=args.peak_n, threads=threads,
                             gflops=round(peak(threads, args.peak_n, args), 1)))
            continue
        for arch in args.arch.split(","):
            flops = forward_flops(**ARCHS[arch])
            for members in args.members:
                for mode in args.mode.split(",") if members > 1 else ["sequential"]:
                    train, infer = measure(arch, mode, members, args)
                    rows.append(dict(arch=arch, mode=mode, threads=threads, members=members,
                                     optimizer=args.optimizer, train_batch=args.train_batch,
                                     train_img_s=round(train), train_gflops=round(3 * flops * train / 1e9, 2),
                                     infer_batch=args.infer_batch, infer_img_s=round(infer),
                                     infer_gflops=round(flops * infer / 1e9, 2), forward_mflop=flops / 1e6))

    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_interop_threads()} inter-op threads")
    if args.peak:
        print("| threads | matmul n | GFLOP/s |\n|---|---|---|")
        for r in rows:
            print(f"| {r['threads']} | {r['n']} | {r['gflops']} |")
        return
    print("| arch | fwd MFLOP/img | threads | members | mode | train img/s (batch, opt) | train GFLOP/s "
          "| infer img/s (batch) | infer GFLOP/s |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['forward_mflop']:.1f} | {r['threads']} | {r['members']} | {r['mode']} "
              f"| {r['train_img_s']} ({r['train_batch']}, {r['optimizer']}) | {r['train_gflops']} "
              f"| {r['infer_img_s']} ({r['infer_batch']}) | {r['infer_gflops']} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# GPU check for hyperprune, for one short lease of a GPU machine that has no Rust toolchain
# and no network. Prepare here (on the build machine), then run on the device.
#
# Prepare (here, ~15 min cold on 2 cores):
#   cargo build --release --features cuda
#   mkdir -p gpu-kit && cp target/release/hyperprune target/release/libhyperprune_plugin_*.so gpu-kit/
#   ./gpu-kit/hyperprune zoo train --arch cnn-s --dataset fashion-mnist --members 8 --epochs 1 --split 0,0,1 --out gpu-kit/zoo -q
#   cp -r /usr/share/datasets/fashion-mnist gpu-kit/fashion-mnist
#   echo /gpu-kit/ >> .git/info/exclude
# Run (device tool): command "bash scripts/gpu-check.sh gpu-kit", carry ["gpu-kit"], timeout 540.
#
# Checks, in well under 5 minutes: GPU logits and per-sample gradients equal the CPU engine's
# within 1e-3 relative on 4 zoo members; training throughput of cnn-s on GPU (batched
# members) next to the CPU figure from the same machine; a short bench on GPU. Prints a
# table last; logs go to $OUT (or ./gpu-check-out).
set -uo pipefail
KIT=${1:-gpu-kit}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
H="$KIT/hyperprune"
DATA=(--data-dir "$KIT/fashion-mnist")
status=()

run() {
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$OUT/gpu-check.log"
  if timeout 150 "$@" >"$OUT/$name.log" 2>&1; then status+=("$name ok"); else status+=("$name FAILED (rc $?)"); fi
  tail -n 20 "$OUT/$name.log" | tee -a "$OUT/gpu-check.log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
run agree "$H" bench-engine agree --zoo "$KIT/zoo" --members 4 --samples 64 --tolerance 1e-3 --engine burn --device cuda "${DATA[@]}"
run gpu-throughput "$H" bench-engine throughput --arch cnn-s --dataset fashion-mnist "${DATA[@]}" --members 1,64,256 --batch 256 --images 16384 --gradients 200 --engine burn --device cuda
run cpu-throughput "$H" bench-engine throughput --arch cnn-s --dataset fashion-mnist "${DATA[@]}" --members 1,64 --batch 256 --threads 16 --images 16384 --gradients 200
run gpu-bench "$H" bench --zoo "$KIT/zoo" --pruners random,magnitude --compression 2,4,8 --members 4 --engine burn --device cuda "${DATA[@]}" --out "$OUT/bench" -q

echo
echo "==== summary ($(date -u +%FT%TZ))"
cat "$OUT/gpu.txt"
printf '%s\n' "${status[@]}"
grep -h -E '^(cnn-s|MEMBER|[0-9]{4} |agreement)' "$OUT"/agree.log "$OUT"/gpu-throughput.log "$OUT"/cpu-throughput.log 2>/dev/null

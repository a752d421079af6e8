#!/usr/bin/env bash
# The hypernetwork studies in one command: trains the zoos, fits the states, runs
# the benches and writes OUT/study.md (every table, with the report folder of each bench).
#
#   scripts/study.sh [--quick] [--out DIR] [--shard i/n] [--stage all|zoos|fits|benches|report]
#                    [--hyperprune PATH] [--data-dir DIR]
#
# --quick     digits only (cnn-digits zoos, short fits): about a minute on 2 cores; the test
#             suite runs it.
# full        Fashion-MNIST and the MNIST subset in tests/data (install Fashion-MNIST with
#             `apt-get install -y dataset-fashion-mnist`); hours on 2 cores.
# --shard i/n runs only that slice of every bench's rows into OUT/shards/; run every shard
#             (e.g. a SLURM array, scripts/slurm/study.sbatch), then `--stage report`
#             merges them (`hyperprune bench merge`) and writes the tables.
#
# Resumable at any point: a zoo resumes from its trained members, a state that exists is not
# refitted, a bench skips the rows already in its results.jsonl. OUT/times.tsv records the
# wall time of every step; study.md sums it per stage.
set -euo pipefail

quick=0
out=""
shard=""
stage=all
hp=""
data_dir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=1 ;;
        --out) out="$2"; shift ;;
        --shard) shard="$2"; shift ;;
        --stage) stage="$2"; shift ;;
        --hyperprune) hp="$2"; shift ;;
        --data-dir) data_dir="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "study.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
root="$(cd "$(dirname "$0")/.." && pwd)"
hp="${hp:-$root/target/release/hyperprune}"
if [[ ! -x "$hp" ]]; then
    echo "study.sh: $hp not found; build it with \`cargo build --release\` or pass --hyperprune PATH" >&2
    exit 2
fi
if [[ -n "$shard" && ! "$shard" =~ ^[0-9]+/[0-9]+$ ]]; then
    echo "study.sh: --shard expects i/n, got '$shard'" >&2
    exit 2
fi
case "$stage" in all|zoos|fits|benches|report) ;; *) echo "study.sh: unknown --stage '$stage'" >&2; exit 2 ;; esac
out="${out:-runs/study$([[ $quick == 1 ]] && echo -quick)}"
mkdir -p "$out/zoos" "$out/states" "$out/runs" "$out/shards"
times="$out/times.tsv"
[[ -f "$times" ]] || printf 'stage\tstep\tseconds\n' > "$times"

# Runs "$@" (a hyperprune command line), timing it under stage $1 and step $2.
timed() {
    local stage_name="$1" step="$2"
    shift 2
    local start end
    start=$(date +%s%N)
    echo "[$stage_name] $step" >&2
    "$hp" -q "$@"
    end=$(date +%s%N)
    printf '%s\t%s\t%d.%01d\n' "$stage_name" "$step" $(((end - start) / 1000000000)) $(((end - start) / 100000000 % 10)) >> "$times"
}

# ---- the study, as data ---------------------------------------------------------------
# zoo NAME ARGS...    : `zoo train` arguments
# fit NAME ZOO ARGS...: `fit --pruner hypernet` arguments (state OUT/states/NAME.state)
# bench NAME ZOO "PRUNERS" "COMPRESSIONS" [STATE_FIT] [ARGS...]: one bench into
#                       OUT/runs/NAME; with STATE_FIT, hypernet loads OUT/states/STATE_FIT.state
#                       (several benches may share NAME: each adds its rows)
# section TITLE "BENCH NAMES": a part of study.md
zoos=()
fits=()
benches=()
sections=()
if [[ $quick == 1 ]]; then
    fit_quick=(--opt steps=60 --opt val_every=20 --opt calib_samples=64 --opt val_samples=128)
    zoos+=("digits|--arch cnn-digits --dataset digits --members 24 --epochs 8 --batch-size 32 --lr 3e-3 --split 0.5,0.25,0.25 --vary seed,init,lr,weight-decay --seed 1")
    zoos+=("digits-sgd|--arch cnn-digits --dataset digits --optimizer sgd --momentum 0.9 --lr 0.05 --members 24 --epochs 8 --batch-size 32 --split 0.5,0.25,0.25 --vary seed,lr,activation,init --seed 2")
    zoos+=("digits-2x|--arch $root/studies/cnn-digits-2x.json --dataset digits --members 8 --epochs 8 --batch-size 32 --lr 3e-3 --split 0,0,1 --vary seed,init,lr,weight-decay --seed 3")
    base=digits; target=digits-sgd; wide=digits-2x; compressions=2,4,8; curve=(2 4 8 12)
else
    fit_quick=()
    v=seed,lr,init,weight-decay,dropout
    s=0.666667,0.111111,0.222222
    zoos+=("fmnist-cnn-s|--arch cnn-s --dataset fashion-mnist --members 72 --epochs 3 --split $s --vary $v --seed 1 --chunk 24")
    zoos+=("mnist-cnn-s|--arch cnn-s --dataset mnist --data-dir $root/tests/data/mnist-10k --members 72 --epochs 3 --split $s --vary $v --seed 1 --chunk 24")
    zoos+=("fmnist-cnn-s-sgd|--arch cnn-s --dataset fashion-mnist --optimizer sgd --momentum 0.9 --lr 0.05 --members 72 --epochs 3 --split $s --vary seed,lr,activation,init,weight-decay,dropout --seed 2 --chunk 24")
    zoos+=("fmnist-cnn-s-2x|--arch $root/studies/cnn-s-2x.json --dataset fashion-mnist --members 16 --epochs 3 --split 0,0,1 --vary $v --seed 3 --chunk 16")
    zoos+=("fmnist-lenet5|--arch lenet5 --dataset fashion-mnist --members 56 --epochs 3 --split 0.571429,0.142857,0.285714 --vary $v --seed 1 --chunk 24")
    zoos+=("fmnist-mlpnet|--arch mlpnet --dataset fashion-mnist --members 56 --epochs 3 --split 0.571429,0.142857,0.285714 --vary $v --seed 1 --chunk 24")
    base=fmnist-cnn-s; target=mnist-cnn-s; wide=fmnist-cnn-s-2x; compressions=2,4,8,16,32; curve=(4 8 16 32 48)
fi

fits+=("pointwise|$base|")
fits+=("target-pointwise|$target|")
fits+=("equivariant|$base|--opt arch=equivariant")
fits+=("magnitude-features|$base|--opt features=magnitude")
fits+=("no-floor|$base|--opt floor=0")
fits+=("synthetic-data|$base|--opt fit_data=synthetic")
fits+=("rescale|$base|--opt rescale=true")
for k in "${curve[@]}"; do fits+=("curve-$k|$base|--train-members $k"); done

# The hypernetwork as it prunes by default: its network's mask and one refinement step on the
# draws its state stores (named, so that the table tells it from the refine=25 row below).
benches+=("ceiling|$base|magnitude,lamp,lap,synflow,obs,maskopt,hypernet|$compressions|pointwise|--opt hypernet.refine=1")
# OBS given the train images' pixel mean and covariance only (Gaussian inputs, no image).
benches+=("ceiling|$base|obs|$compressions||--opt obs.calib_data=moments")
# The same state, its mask refined by 25 distillation steps on the draws the state stores.
benches+=("ceiling|$base|hypernet|$compressions|pointwise|--opt hypernet.refine=25")
benches+=("cross-zoo|$target|magnitude,hypernet|$compressions|pointwise|")
benches+=("cross-zoo|$target|hypernet|$compressions|target-pointwise|")
benches+=("scaling-wide|$wide|magnitude,hypernet|$compressions|pointwise|")
for f in equivariant magnitude-features no-floor synthetic-data rescale; do
    benches+=("ablations|$base|hypernet|$compressions|$f|")
done
benches+=("ablations|$base|magnitude,hypernet|$compressions|pointwise|")
for k in "${curve[@]}"; do benches+=("learning-curve|$base|hypernet|$compressions|curve-$k|"); done
benches+=("controllability|$base|hypernet|1.25,1.5,2,3,4,6,8|pointwise|--opt hypernet.mask=threshold --opt hypernet.sparsity_check=report")
if [[ $quick == 0 ]]; then
    # The control for the data-free fit: real data, no validation (the last parameters).
    fits+=("no-validation|$base|--opt val_every=0")
    benches+=("ablations|$base|hypernet|$compressions|no-validation|")
    fits+=("sgd-pointwise|fmnist-cnn-s-sgd|")
    benches+=("cross-zoo-sgd|fmnist-cnn-s-sgd|magnitude,hypernet|$compressions|pointwise|")
    benches+=("cross-zoo-sgd|fmnist-cnn-s-sgd|hypernet|$compressions|sgd-pointwise|")
    fits+=("lenet5-pointwise|fmnist-lenet5|")
    fits+=("mlpnet-pointwise|fmnist-mlpnet|")
    benches+=("scaling-lenet5|fmnist-lenet5|magnitude,lamp,lap,synflow,hypernet|$compressions|pointwise|")
    benches+=("scaling-lenet5|fmnist-lenet5|hypernet|$compressions|lenet5-pointwise|--opt hypernet.refine=1")
    benches+=("scaling-mlpnet|fmnist-mlpnet|magnitude,lamp,lap,synflow,hypernet|$compressions|pointwise|")
    benches+=("scaling-mlpnet|fmnist-mlpnet|hypernet|$compressions|mlpnet-pointwise|--opt hypernet.refine=1")
    benches+=("scaling-lenet5|fmnist-lenet5|obs|$compressions||--opt obs.calib_data=moments")
    benches+=("scaling-mlpnet|fmnist-mlpnet|obs|$compressions||--opt obs.calib_data=moments")
    benches+=("scaling-lenet5|fmnist-lenet5|hypernet|$compressions|lenet5-pointwise|--opt hypernet.refine=25")
    benches+=("scaling-mlpnet|fmnist-mlpnet|hypernet|$compressions|mlpnet-pointwise|--opt hypernet.refine=25")
    # One fit on a zoo of all three families (`zoo merge`), benched on each family.
    zoos+=("fmnist-mixed|MERGE fmnist-cnn-s fmnist-lenet5 fmnist-mlpnet")
    fits+=("mixed-pointwise|fmnist-mixed|")
    benches+=("scaling-cnn-s-mixed|fmnist-cnn-s|hypernet|$compressions|mixed-pointwise|")
    benches+=("scaling-lenet5|fmnist-lenet5|hypernet|$compressions|mixed-pointwise|")
    benches+=("scaling-mlpnet|fmnist-mlpnet|hypernet|$compressions|mixed-pointwise|")
fi
sections+=("The mask ceiling: the data-free formulas (magnitude, LAMP, LAP, SynFlow), the hypernetwork, OBS (also on moment-matched inputs) and maskopt on the base zoo's test members; the hypernetwork also with refine=25|ceiling")
sections+=("Cross-zoo: the base zoo's state and one fitted on the target zoo, on the target's test members|cross-zoo cross-zoo-sgd")
sections+=("Scaling: the base zoo's state on wider (and, in the full study, other) architectures; per-family and mixed-zoo fits|scaling-wide scaling-lenet5 scaling-mlpnet scaling-cnn-s-mixed")
sections+=("Ablations (each a row, same test members)|ablations")
sections+=("Learning curve: states fitted on the first K train members|learning-curve")
sections+=("Controllability: mask=threshold, requested vs achieved sparsity (sparsity.svg)|controllability")

# ---- stages ------------------------------------------------------------------------------
# The --data-dir for a zoo's dataset: the MNIST subset in tests/data for an mnist zoo (where
# it was trained from), else the study's --data-dir, if any.
data_dir_for() {
    if grep -q '"dataset": *"mnist"' "$out/zoos/$1/zoo.json" 2>/dev/null; then
        echo "$root/tests/data/mnist-10k"
    else
        echo "$data_dir"
    fi
}

run_zoos() {
    local spec name args
    for spec in "${zoos[@]}"; do
        name="${spec%%|*}"
        args="${spec#*|}"
        if [[ "$args" == MERGE* ]]; then
            [[ -f "$out/zoos/$name/zoo.json" ]] && continue
            local parts=()
            for z in ${args#MERGE }; do parts+=("$out/zoos/$z"); done
            timed zoos "$name" zoo merge --out "$out/zoos/$name" "${parts[@]}"
            continue
        fi
        # shellcheck disable=SC2086
        timed zoos "$name" zoo train $args --out "$out/zoos/$name" ${data_dir:+--data-dir "$data_dir"}
    done
}

run_fits() {
    local spec name zoo args
    for spec in "${fits[@]}"; do
        IFS='|' read -r name zoo args <<< "$spec"
        [[ -f "$out/states/$name.state" ]] && continue
        local dd
        dd="$(data_dir_for "$zoo")"
        # shellcheck disable=SC2086
        timed fits "$name" fit --pruner hypernet --zoo "$out/zoos/$zoo" --out "$out/states/$name.state" \
            "${fit_quick[@]}" $args ${dd:+--data-dir "$dd"}
    done
}

run_benches() {
    local spec name zoo pruners comp state args dir
    for spec in "${benches[@]}"; do
        IFS='|' read -r name zoo pruners comp state args <<< "$spec"
        dir="$out/runs/$name"
        [[ -n "$shard" ]] && dir="$out/shards/$name-${shard%/*}"
        local extra=()
        [[ -n "$state" ]] && extra+=(--opt "hypernet.state=$out/states/$state.state")
        [[ -n "$shard" ]] && extra+=(--shard "$shard")
        local dd
        dd="$(data_dir_for "$zoo")"
        # shellcheck disable=SC2086
        timed benches "$name:$pruners:$state" bench --zoo "$out/zoos/$zoo" --pruners "$pruners" \
            --compression "$comp" --out "$dir" "${extra[@]}" $args ${dd:+--data-dir "$dd"}
    done
}

run_report() {
    local names=() spec name
    for spec in "${benches[@]}"; do
        name="${spec%%|*}"
        [[ " ${names[*]} " == *" $name "* ]] || names+=("$name")
    done
    for name in "${names[@]}"; do
        local parts=("$out"/shards/"$name"-*)
        if [[ -e "${parts[0]}" ]]; then
            "$hp" -q bench merge --out "$out/runs/$name" "${parts[@]}" > /dev/null
        fi
    done
    local md="$out/study.md"
    {
        echo "# Hypernetwork study$([[ $quick == 1 ]] && echo " (quick, digits)")"
        echo
        echo "Written by \`scripts/study.sh$([[ $quick == 1 ]] && echo " --quick") --out $out\` on $(date -u +%Y-%m-%dT%H:%M:%SZ)."
        echo "Each table is the summary of one bench folder under \`$out/runs/\`, whose"
        echo "\`report.html\` has the plots (retention against compression, prune time, requested"
        echo "against achieved sparsity). Rows named \`[fitted on Z]\` use a state fitted on zoo Z."
        for spec in "${sections[@]}"; do
            local title="${spec%%|*}" list="${spec#*|}"
            echo
            echo "## $title"
            for name in $list; do
                [[ -f "$out/runs/$name/results.jsonl" ]] || continue
                "$hp" -q report "$out/runs/$name" > /dev/null
                echo
                echo "### $name ($out/runs/$name/report.html)"
                echo
                sed -n '/^- zoo/,$p' "$out/runs/$name/summary.md"
            done
        done
        echo
        echo "## Wall time per stage"
        echo
        echo "| stage | steps | seconds | share |"
        echo "|---|---:|---:|---:|"
        awk -F'\t' 'NR > 1 { s[$1] += $3; n[$1] += 1; t += $3 }
            END { for (k in s) printf "| %s | %d | %.1f | %.0f %% |\n", k, n[k], s[k], (t > 0) ? (100 * s[k] / t) : 0 }' "$times" | sort
    } > "$md"
    echo "wrote $md" >&2
}

[[ $stage == all || $stage == zoos ]] && run_zoos
[[ $stage == all || $stage == fits ]] && run_fits
[[ $stage == all || $stage == benches ]] && run_benches
[[ $stage == all || $stage == report ]] && [[ -z "$shard" || $stage == report ]] && run_report
exit 0

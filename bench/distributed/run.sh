#!/bin/bash
# Data-parallel throughput on this machine: DPO with the `distributed`
# backend on 1 process (global batch BATCH, THREADS intra-op threads) against
# 2 processes (BATCH/2 each, THREADS/2 threads each), both through
# `alignkit launch`. Each side runs STEPS and 2*STEPS steps; the difference
# removes start-up (plugin loading, rendezvous, reference pass), so pairs/s
# is the steady training rate. Prints one line per side and their ratio.
#
#   bench/distributed/run.sh [ALIGNKIT]    (default: build/bin/alignkit)
#
# Environment: STEPS (8), BATCH (8 pairs, global), THREADS (2), KEEP=1 keeps the work folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
alignkit=${1:-$here/../../build/bin/alignkit}
steps=${STEPS:-8}
batch=${BATCH:-8}
threads=${THREADS:-2}
python=/usr/bin/python3

[ -x "$alignkit" ] || { echo "run.sh: no alignkit binary at $alignkit" >&2; exit 2; }
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || echo "missing")
[[ "$blas" == *openblas* ]] || echo "WARNING: libblas.so.3 is $blas, not OpenBLAS: numbers are ~24x too slow" >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/alignkit-bench-dist.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "work folder: $work"; else trap 'rm -rf "$work"' EXIT; fi

"$alignkit" model init --vocab-size 2000 --hidden-size 128 --layers 2 --heads 4 --intermediate-size 344 \
  --max-position-embeddings 256 --seed 0 --out "$work/model" > /dev/null
"$python" "$here/../dpo/prepare.py" --model "$work/model" --data "$work/prefs.jsonl" --pairs $((2 * steps * batch)) \
  --prompt 32 --min-completion 32 --max-completion 32 --seed 0 > /dev/null

# seconds for `nproc` processes to run `n` steps
run() {
  local nproc=$1 n=$2 dir="$work/p$1-s$2"
  mkdir -p "$dir"
  cat > "$dir/pipeline.toml" <<TOML
[run]
output_dir = "$dir/out"
seed = 42
[models.base]
path = "$work/model"
[stages.dpo]
algorithm = "dpo"
backend = "distributed"
device = "cpu"
model = "base"
data = { path = "$work/prefs.jsonl" }
per_device_train_batch_size = $((batch / nproc))
threads = $((threads / nproc > 0 ? threads / nproc : 1))
max_steps = $n
shuffle = false
logging_steps = 1
save_steps = 0
TOML
  local start end
  start=$(date +%s.%N)
  OPENBLAS_NUM_THREADS=$((threads / nproc > 0 ? threads / nproc : 1)) \
    "$alignkit" launch --nproc-per-node "$nproc" --master-port $((29700 + RANDOM % 200)) -- run "$dir/pipeline.toml" \
    > "$dir/log" 2>&1 || { cat "$dir/log" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

declare -A rate
for nproc in 1 2; do
  short=$(run "$nproc" "$steps")
  long=$(run "$nproc" $((2 * steps)))
  rate[$nproc]=$(echo "$steps * $batch / ($long - $short)" | bc -l)
  printf 'distributed dpo: %d process(es) x %d pairs x %d thread(s): %.2f pairs/s (%d steps in %.1f s, %d in %.1f s)\n' \
    "$nproc" $((batch / nproc)) $((threads / nproc > 0 ? threads / nproc : 1)) "${rate[$nproc]}" "$steps" "$short" \
    $((2 * steps)) "$long"
done
printf 'distributed dpo: 2 processes / 1 process = %.2fx (cores: %d, global batch %d, blas %s)\n' \
  "$(echo "${rate[2]} / ${rate[1]}" | bc -l)" "$(nproc)" "$batch" "$(basename "$blas")"

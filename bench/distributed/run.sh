#!/bin/bash
# Data-parallel throughput on this machine: DPO with the `distributed`
# backend through `alignkit launch`, the same global batch (BATCH pairs) split
# over 1 or 2 processes. CONFIGS lists PROCESSES:THREADS pairs (intra-op and
# OpenBLAS threads per process); the default "1:2 1:1 2:1" compares 2
# processes x 1 thread with 1 process using both cores and with 1 process on
# one core. The steady rate is timed from rank 0's progress lines between
# step 2 and the last step (start-up, rendezvous and the reference pass are
# left out). Prints one line per configuration.
#
#   bench/distributed/run.sh [ALIGNKIT]    (default: build/bin/alignkit)
#
# Environment: STEPS (12), BATCH (8 pairs, global), CONFIGS ("1:2 1:1 2:1"), KEEP=1 keeps the work folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
alignkit=${1:-$here/../../build/bin/alignkit}
steps=${STEPS:-12}
batch=${BATCH:-8}
configs=${CONFIGS:-"1:2 1:1 2:1"}
python=/usr/bin/python3

[ -x "$alignkit" ] || { echo "run.sh: no alignkit binary at $alignkit" >&2; exit 2; }
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || echo "missing")
[[ "$blas" == *openblas* ]] || echo "WARNING: libblas.so.3 is $blas, not OpenBLAS: numbers are ~24x too slow" >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/alignkit-bench-dist.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "work folder: $work"; else trap 'rm -rf "$work"' EXIT; fi

"$alignkit" model init --vocab-size 2000 --hidden-size 128 --layers 2 --heads 4 --intermediate-size 344 \
  --max-position-embeddings 256 --seed 0 --out "$work/model" > /dev/null
"$python" "$here/../dpo/prepare.py" --model "$work/model" --data "$work/prefs.jsonl" --pairs $((steps * batch)) \
  --prompt 32 --min-completion 32 --max-completion 32 --seed 0 > /dev/null

# pairs/s of `nproc` processes with `threads` threads each
run() {
  local nproc=$1 threads=$2 dir="$work/p$1-t$2"
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
threads = $threads
max_steps = $steps
shuffle = false
logging_steps = 1
save_steps = 0
TOML
  # Each output line with the time it arrived.
  OPENBLAS_NUM_THREADS=$threads \
    "$alignkit" launch --nproc-per-node "$nproc" --master-port $((29700 + RANDOM % 200)) -- run "$dir/pipeline.toml" 2>&1 |
    while IFS= read -r line; do echo "$(date +%s.%N) $line"; done > "$dir/log"
  grep -q "saved .*final" "$dir/log" || { cat "$dir/log" >&2; exit 1; }
  local first last
  first=$(grep "\] \[dpo\] step 2/" "$dir/log" | head -n 1 | cut -d' ' -f1)
  last=$(grep "\] \[dpo\] step $steps/" "$dir/log" | head -n 1 | cut -d' ' -f1)
  echo "($steps - 2) * $batch / ($last - $first)" | bc -l
}

for config in $configs; do
  nproc=${config%%:*} threads=${config##*:}
  rate=$(run "$nproc" "$threads")
  printf 'distributed dpo: %d process(es) x %d pairs x %d thread(s): %.2f pairs/s (global batch %d, steps 3..%d, %d cores, load %s, %s)\n' \
    "$nproc" $((batch / nproc)) "$threads" "$rate" "$batch" "$steps" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)" "$blas"
done

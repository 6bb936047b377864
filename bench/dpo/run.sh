#!/bin/bash
# DPO training throughput of AlignKit against a Python loop that does the
# same work the way TRL does (reference_dpo.py), on one checkpoint and one
# data file, in one run: pairs/s, tokens/s, step time, peak RSS, and both
# sides' per-step losses side by side. See README.md here.
#
#   bench/dpo/run.sh [ALIGNKIT]    (default: build/bin/alignkit)
#
# Environment: STEPS (16), BATCH (8 pairs), REPEATS (5), THREADS (2),
# KEEP=1 keeps the work folder. Exits 1 when the losses disagree.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
alignkit=${1:-$here/../../build/bin/alignkit}
steps=${STEPS:-16}
batch=${BATCH:-8}
repeats=${REPEATS:-5}
threads=${THREADS:-2}
python=/usr/bin/python3  # Debian's python3-torch; the python3 on PATH may lack torch
# OpenBLAS runs its own thread pool (as many threads as cores unless told):
# give both sides the same number of BLAS threads as intra-op threads.
export OPENBLAS_NUM_THREADS=$threads

[ -x "$alignkit" ] || { echo "run.sh: no alignkit binary at $alignkit (build it, or pass its path)" >&2; exit 2; }
"$python" -c 'import torch' 2>/dev/null || { echo "run.sh: $python has no torch (apt-get install python3-torch)" >&2; exit 2; }

# LibTorch on the reference BLAS is ~24x slower (shared/notes/platform.md): the numbers would mean nothing.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || echo "missing")
if [[ "$blas" != *openblas* ]]; then
  echo "################################################################################" >&2
  echo "# WARNING: libblas.so.3 is $blas, not OpenBLAS." >&2
  echo "# Both sides will run ~24x slower; install libopenblas0-pthread before trusting" >&2
  echo "# any number below." >&2
  echo "################################################################################" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/alignkit-bench-dpo.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "work folder: $work"; else trap 'rm -rf "$work"' EXIT; fi

# About 8M parameters: platform.md's reference model.
"$alignkit" model init --vocab-size 8000 --hidden-size 256 --layers 4 --heads 4 --intermediate-size 688 \
  --max-position-embeddings 512 --seed 0 --out "$work/model"
"$python" "$here/prepare.py" --model "$work/model" --data "$work/prefs.jsonl" --pairs $((steps * batch)) \
  --prompt 64 --min-completion 48 --max-completion 64 --seed 0

beta=0.1 learning_rate=1e-4 weight_decay=0.01 max_grad_norm=1.0
for k in $(seq 1 "$repeats"); do
  rep="$work/rep-$k"
  mkdir -p "$rep"
  cat > "$rep/pipeline.toml" <<EOF
[run]
output_dir = "$rep/alignkit"
seed = 42

[models.base]
path = "$work/model"

[stages.dpo]
algorithm = "dpo"
model = "base"
reference = "base"
data = { path = "$work/prefs.jsonl" }
loss_type = "sigmoid"
beta = $beta
precompute_ref_log_probs = false
learning_rate = $learning_rate
lr_scheduler_type = "constant"
weight_decay = $weight_decay
max_grad_norm = $max_grad_norm
per_device_train_batch_size = $batch
max_steps = $steps
shuffle = false
logging_steps = 1
save_steps = 0
threads = $threads
EOF
  # Alternate the two sides so drifting load on the shared machine hits both alike.
  echo "repeat $k/$repeats: AlignKit"
  /usr/bin/time -v -o "$rep/alignkit.time" "$alignkit" run "$rep/pipeline.toml" > "$rep/alignkit.log" 2>&1 ||
    { cat "$rep/alignkit.log" >&2; exit 1; }
  echo "repeat $k/$repeats: Python"
  /usr/bin/time -v -o "$rep/python.time" "$python" "$here/reference_dpo.py" --model "$work/model" \
    --data "$work/prefs.jsonl" --out "$rep/python.json" --steps "$steps" --batch "$batch" --beta $beta \
    --learning-rate $learning_rate --weight-decay $weight_decay --max-grad-norm $max_grad_norm \
    --threads "$threads" > "$rep/python.log" 2>&1 || { cat "$rep/python.log" >&2; exit 1; }
done

echo
"$python" "$here/report.py" "$work" --repeats "$repeats" --batch "$batch" --threads "$threads" --blas "$blas"

#!/bin/bash
# Peak resident memory and step time of a DPO step under each memory setting
# (see README.md here): full fine-tuning with a separate reference model,
# precomputed reference log-probs, and LoRA with the adapter-disabled
# reference, each plain, with chunked log-probs, with activation
# recomputation, and with both. Every configuration runs in its own process
# (peak RSS is per process); one table of ratios to the first row.
#
#   bench/memory/run.sh [ALIGNKIT]    (default: build/bin/alignkit)
#
# Environment: STEPS (3), BATCH (4 pairs), LENGTH (256 tokens a row),
# THREADS (2), KEEP=1 keeps the work folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
alignkit=${1:-$here/../../build/bin/alignkit}
steps=${STEPS:-3}
batch=${BATCH:-4}
length=${LENGTH:-256}
threads=${THREADS:-2}
python=/usr/bin/python3  # Debian's python3-torch (bench/dpo/prepare.py needs nothing else)
export OPENBLAS_NUM_THREADS=$threads

[ -x "$alignkit" ] || { echo "run.sh: no alignkit binary at $alignkit (build it, or pass its path)" >&2; exit 2; }
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || echo "missing")
if [[ "$blas" != *openblas* ]]; then
  echo "WARNING: libblas.so.3 is $blas, not OpenBLAS: step times will be ~24x slower" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/alignkit-bench-memory.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "work folder: $work"; else trap 'rm -rf "$work"' EXIT; fi

# About 45M parameters, most of them in the 32k vocabulary (embeddings and
# lm_head), as in small real models: the (B, T, V) logits are what chunking saves.
"$alignkit" model init --vocab-size 32000 --hidden-size 512 --layers 4 --heads 8 --intermediate-size 1376 \
  --max-position-embeddings 1024 --seed 0 --out "$work/model" > "$work/init.log"
half=$((length / 2))
"$python" "$here/../dpo/prepare.py" --model "$work/model" --data "$work/prefs.jsonl" --pairs $((steps * batch)) \
  --prompt "$half" --min-completion "$half" --max-completion "$half" --seed 0

# name | stage lines
configs=(
  "full|reference = \"base\""
  "full+chunk|reference = \"base\"
logprob_chunk_size = 64"
  "full+recompute|reference = \"base\"
gradient_checkpointing = true"
  "full+chunk+recompute|reference = \"base\"
logprob_chunk_size = 64
gradient_checkpointing = true"
  "precomputed|reference = \"base\"
precompute_ref_log_probs = true"
  "precomputed+chunk|reference = \"base\"
precompute_ref_log_probs = true
logprob_chunk_size = 64"
  "precomputed+recompute|reference = \"base\"
precompute_ref_log_probs = true
gradient_checkpointing = true"
  "precomputed+chunk+recompute|reference = \"base\"
precompute_ref_log_probs = true
logprob_chunk_size = 64
gradient_checkpointing = true"
  "lora|lora = { r = 16, lora_alpha = 32, target_modules = \"all-linear\" }"
  "lora+chunk|lora = { r = 16, lora_alpha = 32, target_modules = \"all-linear\" }
logprob_chunk_size = 64"
  "lora+recompute|lora = { r = 16, lora_alpha = 32, target_modules = \"all-linear\" }
gradient_checkpointing = true"
  "lora+chunk+recompute|lora = { r = 16, lora_alpha = 32, target_modules = \"all-linear\" }
logprob_chunk_size = 64
gradient_checkpointing = true"
)

names=()
for entry in "${configs[@]}"; do
  name=${entry%%|*}
  lines=${entry#*|}
  names+=("$name")
  dir="$work/$name"
  mkdir -p "$dir"
  cat > "$dir/pipeline.toml" <<TOML
[run]
output_dir = "$dir/out"
seed = 42

[models.base]
path = "$work/model"

[stages.dpo]
algorithm = "dpo"
model = "base"
data = { path = "$work/prefs.jsonl" }
learning_rate = 1e-4
lr_scheduler_type = "constant"
per_device_train_batch_size = $batch
per_device_eval_batch_size = $batch
max_length = $length
max_steps = $steps
shuffle = false
logging_steps = 1
save_steps = 0
threads = $threads
$lines
TOML
  echo "running $name" >&2
  /usr/bin/time -v -o "$dir/time.txt" "$alignkit" run "$dir/pipeline.toml" > "$dir/log.txt" 2>&1 ||
    { cat "$dir/log.txt" >&2; exit 1; }
done

"$python" "$here/report.py" "$work" --threads "$threads" --blas "$blas" --batch "$batch" --length "$length" \
  --params "$(grep -o '[0-9]* parameters' "$work/init.log")" "${names[@]}"

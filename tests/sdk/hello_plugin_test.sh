#!/bin/sh
# Builds and runs the hello plugin example as a third party would (see
# CMakeLists.txt here): `cmake --install --component sdk`, an out-of-tree
# find_package(AlignKit) build, then `alignkit plugins list/info`, `validate`,
# `run` (it must learn), a second `run` (skipped: DONE) and `run --resume` from
# an early checkpoint (the same final weights).
#
# usage: hello_plugin_test.sh CMAKE BUILD_DIR EXAMPLE_DIR ALIGNKIT WORK_DIR GENERATOR CXX_COMPILER TORCH_DIR [LAUNCHER]
set -eu
cmake_command=$1 build_dir=$2 example_dir=$3 alignkit=$4 work=$5 generator=$6 cxx_compiler=$7 torch_dir=$8
launcher=${9:-}
unset ALIGNKIT_PLUGIN_PATH  # only the in-tree plugins and the folder given below

fail() {
  echo "FAIL: $1" >&2
  if [ -n "${2:-}" ]; then printf '%s\n' "--- output:" "$2" >&2; fi
  exit 1
}

# A fixed work folder (not mktemp) keeps compiler command lines identical from
# run to run, so ccache can answer the rebuild.
rm -rf "$work"
mkdir -p "$work/plugins"
prefix=$work/prefix

echo "== install the SDK alone into $prefix"
out=$("$cmake_command" --install "$build_dir" --component sdk --prefix "$prefix" 2>&1) || fail "cmake --install" "$out"
[ -f "$prefix/include/alignkit/plugin.hpp" ] || fail "the SDK headers were not installed" "$out"

echo "== configure and build the example out of tree"
out=$("$cmake_command" -S "$example_dir" -B "$work/build" -G "$generator" \
  -DCMAKE_PREFIX_PATH="$prefix" -DTorch_DIR="$torch_dir" -DCMAKE_CXX_COMPILER="$cxx_compiler" \
  -DCMAKE_CXX_COMPILER_LAUNCHER="$launcher" -DCMAKE_CXX_FLAGS="-Wall -Wextra -Wpedantic -Werror" 2>&1) ||
  fail "configuring the example" "$out"
grep -q "^AlignKit_DIR:PATH=$prefix/" "$work/build/CMakeCache.txt" ||
  fail "find_package(AlignKit) did not use the SDK just installed" "$(grep AlignKit_DIR "$work/build/CMakeCache.txt")"
out=$("$cmake_command" --build "$work/build" 2>&1) || fail "building the example" "$out"
cp "$work/build/libhello_plugin.so" "$work/plugins/"

echo "== plugins list --json"
out=$("$alignkit" plugins list --json --plugin-dir "$work/plugins" 2>&1) || fail "plugins list exited $?" "$out"
# nlohmann's dump(2): each plugin is an object at indent 2, its keys at indent 4.
found=$(printf '%s\n' "$out" | awk -v want="$work/plugins/libhello_plugin.so" '
  /^  \{/ { name = ""; path = ""; status = "" }
  /^    "name": /   { name = $2 }
  /^    "path": /   { path = $2 }
  /^    "status": / { status = $2 }
  /^  \}/ { if (path == "\"" want "\",") print name, status }')
[ "$found" = '"hello", "ok",' ] || fail "hello is not listed with status ok (found: $found)" "$out"

echo "== plugins info hello"
out=$("$alignkit" plugins info hello --plugin-dir "$work/plugins" 2>&1) || fail "plugins info exited $?" "$out"
for line in "algorithm hello 1.0.0" "slope  *a float  *2.0 " "intercept  *a float  *-0.5 " \
  "num_points  *an integer  *64 " "learning_rate  *a float  *0.1 "; do
  printf '%s\n' "$out" | grep -q "$line" || fail "plugins info does not show '$line'" "$out"
done

cat >"$work/hello.toml" <<TOML
[run]
output_dir = "$work/runs"

# Every stage names a model; hello needs none, so this entry is never read.
[models.none]
path = "unused"

[stages.fit]
algorithm = "hello"
backend = "local"
model = "none"
slope = -1.5
intercept = 0.75
num_train_epochs = 20
save_steps = 50
device = "cpu"
threads = 1
TOML

echo "== validate: the plugin's own settings are checked"
rc=0
out=$("$alignkit" validate "$work/hello.toml" --plugin-dir "$work/plugins" --set stages.fit.num_points=1 2>&1) || rc=$?
[ "$rc" = 2 ] || fail "validate with num_points=1 exited $rc, expected 2" "$out"
printf '%s\n' "$out" | grep -q "stages.fit.num_points: must be at least 2, found 1" ||
  fail "validate did not explain the bad num_points" "$out"

echo "== run: it learns"
stage=$work/runs/fit
out=$("$alignkit" run "$work/hello.toml" --plugin-dir "$work/plugins" 2>&1) || fail "run exited $?" "$out"
[ -f "$stage/DONE" ] || fail "no DONE marker in $stage" "$out"
[ -f "$stage/final/model.safetensors" ] || fail "no final/model.safetensors" "$out"
value() { sed -n "s/.*\"$1\": *\([^,}]*\).*/\1/p" "$stage/final/hello.json"; }
close() { awk -v got="$1" -v want="$2" 'BEGIN { d = got - want; if (d < 0) d = -d; exit !(got != "" && d < 0.01) }'; }
close "$(value slope)" -1.5 || fail "fitted slope $(value slope), expected -1.5" "$(cat "$stage/final/hello.json")"
close "$(value intercept)" 0.75 || fail "fitted intercept $(value intercept), expected 0.75" "$(cat "$stage/final/hello.json")"
train_losses=$(grep '"split":"train"' "$stage/metrics.jsonl" | sed 's/.*"loss":\([^,}]*\).*/\1/')
first=$(printf '%s\n' "$train_losses" | head -n 1)
last=$(printf '%s\n' "$train_losses" | tail -n 1)
awk -v first="$first" -v last="$last" 'BEGIN { exit !(first > 0.1 && last < first / 1000) }' ||
  fail "the training loss did not go down enough: first $first, last $last" "$(cat "$stage/metrics.jsonl")"

echo "== run again: the finished stage is skipped"
out=$("$alignkit" run "$work/hello.toml" --plugin-dir "$work/plugins" 2>&1) || fail "second run exited $?" "$out"
printf '%s\n' "$out" | grep -q "\[fit\] already finished with these settings; skipping" ||
  fail "the second run did not skip the finished stage" "$out"

echo "== run --resume from step 50: the same final weights"
cp "$stage/final/hello.json" "$work/uninterrupted.json"
cp "$stage/final/model.safetensors" "$work/uninterrupted.safetensors"
[ -f "$stage/checkpoint-000050/COMMITTED" ] || fail "no committed checkpoint at step 50" "$(ls "$stage")"
rm -rf "$stage/DONE" "$stage/final" "$stage/checkpoint-000100" "$stage/checkpoint-000150"
out=$("$alignkit" run "$work/hello.toml" --plugin-dir "$work/plugins" --resume 2>&1) || fail "resumed run exited $?" "$out"
printf '%s\n' "$out" | grep -q "resuming from $stage/checkpoint-000050 (step 50)" ||
  fail "the run did not resume from checkpoint-000050" "$out"
cmp -s "$stage/final/hello.json" "$work/uninterrupted.json" ||
  fail "resuming changed the result: $(cat "$stage/final/hello.json") vs $(cat "$work/uninterrupted.json")" "$out"
cmp -s "$stage/final/model.safetensors" "$work/uninterrupted.safetensors" ||
  fail "resuming changed final/model.safetensors" "$out"

echo "PASS: hello_plugin built against the installed SDK, listed, run, skipped and resumed"

#!/usr/bin/env bash
# The full-size LoRA step benchmark (issues 7, 16) on a lent GPU machine, which has torch but no
# diffusers (wheels in .whl/, see CONTRIBUTING.md). One command, both sizes in one run:
#   run (device tool, carry .whl):  bash scripts/gpu_bench.sh
# writes $OUT/bench.log and $OUT/bench.json (card, driver, versions, every timed step). Then, here:
#   .venv/bin/python -m kontext_teach bench --adopt <files_at>/bench.json   # -> benchmarks/results/, README
#   git add benchmarks/results README.md && git commit
# BENCH_ARGS: the benchmark's options; BENCH_SECONDS: its time limit.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
install /tmp/site .whl/diffusers-*.whl .whl/importlib_metadata-*.whl .whl/lazy_importer-*.whl
install /tmp/site2 .whl/transformers-*.whl .whl/regex-*.whl
export PYTHONPATH=/tmp/site2:/tmp/site:$PWD
python3 -c "from diffusers import FluxKontextPipeline" 2>/dev/null || export PYTHONPATH=/tmp/site:$PWD
timeout "${BENCH_SECONDS:-420}" python3 -m kontext_teach bench \
    ${BENCH_ARGS:---sides 1024 512 --warmup 2 --steps 4 --checkpoint-fraction 1.0 0.5} --results "$OUT/bench.json" \
    2>&1 | tee "$OUT/bench.log"

#!/usr/bin/env bash
# The full-size LoRA step benchmark (issue 7) on a lent GPU machine, which has torch but no diffusers
# (wheels in .whl/, see CONTRIBUTING.md). BENCH_ARGS: the benchmark's options; BENCH_SECONDS: its time limit.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OUT=${OUT:-/tmp/out}
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
install /tmp/site .whl/diffusers-*.whl .whl/importlib_metadata-*.whl .whl/lazy_importer-*.whl
install /tmp/site2 .whl/transformers-*.whl .whl/regex-*.whl
export PYTHONPATH=/tmp/site2:/tmp/site:$PWD
python3 -c "from diffusers import FluxKontextPipeline" 2>/dev/null || export PYTHONPATH=/tmp/site:$PWD
timeout "${BENCH_SECONDS:-250}" python3 -m kontext_teach.training.bench ${BENCH_ARGS:---sides 1024 --warmup 2 --steps 4 --checkpoint-fraction 1.0 0.5} \
    2>&1 | tee "$OUT/bench.log"

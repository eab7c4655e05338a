#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool), which has torch but no diffusers (wheels in
# .whl/, see CONTRIBUTING.md):
#   1. three trainings of the miniature side by side (it is far too small to fill the GPU alone):
#      g1 continues the shipped transformer, g2 starts from scratch, g3 continues with more
#      high-noise training; each evaluates itself on held-out pairs at the end;
#   2. the full-size LoRA step benchmark (issue 7) at 1024², once the GPU is free again ($OUT/bench.json:
#      adopt it here with `.venv/bin/python -m kontext_teach bench --adopt FILE`).
# Everything worth keeping lands in $OUT (at most 8 files come back): g1.tar g2.tar g3.tar, logs.
# Knobs: MINUTES (training budget per run), PAIRS, TRAIN_DEADLINE / END (seconds since start).
set -u
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
MINUTES=${MINUTES:-4.0} PAIRS=${PAIRS:-60000} TRAIN_DEADLINE=${TRAIN_DEADLINE:-400} END=${END:-545}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" runs

install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
install /tmp/site .whl/diffusers-*.whl .whl/importlib_metadata-*.whl .whl/lazy_importer-*.whl
install /tmp/site2 .whl/transformers-*.whl .whl/regex-*.whl
export PYTHONPATH=/tmp/site2:/tmp/site:$PWD
python3 -c "from diffusers import FluxKontextPipeline" 2>/dev/null || export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
echo "set-up done at $(elapsed)s"

E=kontext_teach/toy/embedded_model
common="--threads 3 --workers 4 --vae $E/vae --train-pairs $PAIRS --minutes $MINUTES --batch 256 --quiet ${EXTRA:-}"
python3 -m kontext_teach.toy.mini_training --out runs/g1 $common --transformer $E/transformer --lr 3e-4 --warmup 100 \
    > "$OUT/g1.log" 2>&1 &
python3 -m kontext_teach.toy.mini_training --out runs/g2 $common --seed 1 --lr 1e-3 --warmup 300 \
    > "$OUT/g2.log" 2>&1 &
python3 -m kontext_teach.toy.mini_training --out runs/g3 $common --transformer $E/transformer --lr 3e-4 --warmup 100 \
    --logit-mean 0.5 > "$OUT/g3.log" 2>&1 &
while [ -n "$(jobs -r)" ] && [ "$(elapsed)" -lt "$TRAIN_DEADLINE" ]; do sleep 5; done
echo "trainings ended (or deadline) at $(elapsed)s; still running: $(jobs -r | wc -l)"
kill $(jobs -p) 2>/dev/null
for run in g1 g2 g3; do
    (cd runs/$run 2>/dev/null && tar cf "$OUT/$run.tar" --ignore-failed-read transformer vae scheduler \
        model_index.json training_record.json train_log.txt 2>/dev/null)
    tail -n 12 "$OUT/$run.log"
done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv

left=$(( END - $(elapsed) ))
echo "benchmark with ${left}s left"
if [ "$left" -gt 60 ]; then
    timeout "$left" python3 -m kontext_teach bench --sides 1024 --warmup 2 --steps 4 --checkpoint-fraction 1.0 0.5 \
        --results "$OUT/bench.json" \
        2>&1 | tee "$OUT/bench.log"
fi
echo "all done at $(elapsed)s"

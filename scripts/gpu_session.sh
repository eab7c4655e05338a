#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool), which has torch but no diffusers (wheels in
# .whl/, see CONTRIBUTING.md): the next miniature (issue 12), then the full-size benchmark.
#   1. two runs of the miniature side by side (it is far too small to keep the GPU busy alone), each a
#      CFG teacher with the binding recipe followed by its guidance-distilled student, in one
#      mini-training call:
#        t1 continues the shipped teacher (2 double + 4 single blocks; one more single block would
#           break the 30 MB budget, teacher and student together);
#        t2 trains the same shape from scratch;
#   2. the full-size LoRA step benchmark (issues 7, 16) at 1024², once the GPU is free again ($OUT/bench.json:
#      adopt it here with `.venv/bin/python -m kontext_teach bench --adopt FILE`).
# Then, here on CPU: evaluate runs/t1 and runs/t2 (python -m kontext_teach.toy.miniature_report FOLDER) and
# ship the better one as CONTRIBUTING.md says (the flip LoRA and notebook 09's table are rebuilt on it).
# Everything worth keeping lands in $OUT (at most 8 files come back): t1.tar t2.tar, logs.
# Knobs: MINUTES / DISTILL_MINUTES (budgets per run), PAIRS, TRAIN_DEADLINE / END (seconds since start), EXTRA.
set -u
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
MINUTES=${MINUTES:-3.5} DISTILL_MINUTES=${DISTILL_MINUTES:-1.5} PAIRS=${PAIRS:-60000}
TRAIN_DEADLINE=${TRAIN_DEADLINE:-460} END=${END:-560}
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
# The teacher-then-student recipe of the shipped weights (Makefile MINI_ARGS), with the binding families and
# every shape's tokens stressed, and GPU-sized batches.
recipe="--threads 3 --workers 4 --vae $E/vae --train-pairs $PAIRS --batch 256 --quiet --eval-pairs 0
 --minutes $MINUTES --guidance-range 1 1 --prompt-dropout 0.1 --family-weights 4,1,4,1 --edit-weight 4
 --shape-weight 4 --long-text-lengths 128,512 --long-share 0.2 --long-batch 64
 --distill-minutes $DISTILL_MINUTES --distill-lr 2e-4 --distill-guidance-range 1 6 ${EXTRA:-}"
python3 -m kontext_teach.toy.mini_training --out runs/t1 $recipe --transformer $E/teacher_transformer \
    --lr 2e-4 --warmup 50 > "$OUT/t1.log" 2>&1 &
python3 -m kontext_teach.toy.mini_training --out runs/t2 $recipe --seed 1 --single-blocks 4 --lr 1e-3 \
    --warmup 300 > "$OUT/t2.log" 2>&1 &
while [ -n "$(jobs -r)" ] && [ "$(elapsed)" -lt "$TRAIN_DEADLINE" ]; do sleep 5; done
echo "trainings ended (or deadline) at $(elapsed)s; still running: $(jobs -r | wc -l)"
kill $(jobs -p) 2>/dev/null
for run in t1 t2; do
    (cd runs/$run 2>/dev/null && tar cf "$OUT/$run.tar" --ignore-failed-read transformer teacher_transformer vae \
        scheduler model_index.json training_record.json train_log.txt 2>/dev/null)
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

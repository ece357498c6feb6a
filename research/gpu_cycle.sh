#!/usr/bin/env bash
# One training cycle on a lent GPU machine, as a single command (run from the repository root):
#   bash research/gpu_cycle.sh NAME EXPERIMENT [hydra overrides...]
# e.g. bash research/gpu_cycle.sh vgg_fer_s1 vgg_fer_fer2013 seed=1 trainer.max_epochs=150
#
# It needs `.gpu/` from `make gpu-bundle` (carried along: FER-2013 train + val as a compact copy,
# and wheels of the pure-Python packages the GPU image lacks). It trains without testing, packs
# the best checkpoint (selected on PublicTest) in fp16 and puts it, the log and the run's
# TensorBoard logs into $OUT. PrivateTest never leaves this machine's side: score the weights
# back here with `python -m emo.evaluate ckpt_path=... split=test`.
set -euo pipefail
name=${1:?usage: gpu_cycle.sh NAME EXPERIMENT [overrides...]}
exp=${2:?usage: gpu_cycle.sh NAME EXPERIMENT [overrides...]}
shift 2
out=${OUT:?OUT must name the folder whose files come back}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
export PYTHONPATH=/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
export EMO_DATA_DIR=.gpu/data EMO_CACHE_DIR=/tmp/emo-cache
run=/tmp/runs/$name
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/$name.log"
python3 -m emo.train experiment="$exp" test=false hydra.run.dir="$run" "$@" 2>&1 \
  | tr '\r' '\n' | grep -v '^Epoch .*it/s' | tee -a "$out/$name.log"
best=$(ls "$run"/checkpoints/best-*.ckpt | head -n 1)
python3 -m emo.models.pack "$best" "$name" --fp16 --out "$out/$name.ckpt"
# Files come back only up to 16 MiB each: split bigger weights (join them with cat).
if [ "$(stat -c %s "$out/$name.ckpt")" -gt 16000000 ]; then
  split -b 15m -d "$out/$name.ckpt" "$out/$name.ckpt.part"
  rm "$out/$name.ckpt"
fi
tar czf "$out/$name-run.tgz" --exclude=checkpoints -C "$run" .
ls -l "$out"

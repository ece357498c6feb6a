#!/usr/bin/env bash
# Queue runs (runs/queue.yaml) side by side on a lent GPU machine, as one command from the
# repository root, with .gpu/ (make gpu-bundle) carried along:
#   bash research/gpu_queue.sh SECONDS [NAME...]
# Each NAME runs its queue command exactly (held runs too) and is finished as the CPU queue
# finishes it (research/train_queue.py one NAME --no-commit): runs/NAME/ gets the fp16 weights,
# train_probs.pt, val_probs.pt and result.json (PublicTest only; PrivateTest is not carried).
# After SECONDS of training the runs still going are stopped and their last.ckpt is kept instead.
# What comes back in $OUT (at most 8 files of 16 MiB):
#   results.tgz*         runs/NAME/ of every finished run: untar it in the repository root (over
#                        15 MiB: in parts, cat results.tgz.* | tar xz)
#   logs.tgz             each run's train.log, composed config and metrics.json
#   resume-NAME.tgz*     an unfinished run's last.ckpt as runs/NAME/resume.ckpt (over 30 MB: a
#                        lean copy, train_queue.py lean; split in parts over 15 MiB:
#                        cat resume-NAME.tgz.* | tar xz); the CPU queue or the next GPU call resumes it
#
# .gpu/ (~56 MiB) and a large run's resume point (~21 MB, lean) do not fit in one call's 64 MiB
# together, so .gpu/ is kept in /tmp/gpu for the machine's later calls: a call with no NAME
# carrying .gpu only stages it, and a call without .gpu uses what an earlier one left.
set -uo pipefail
budget=${1:?usage: gpu_queue.sh SECONDS [NAME...]}
shift
out=${OUT:?OUT must name the folder whose files come back}
gpu=/tmp/gpu
if [ -d .gpu/data ]; then
  mkdir -p "$gpu" && cp -r .gpu/. "$gpu/" || exit 1
elif [ ! -d "$gpu/data" ]; then
  echo "no .gpu/ carried, and no earlier call on this machine left one in $gpu: carry .gpu (make gpu-bundle)"
  exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$gpu"/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export EMO_DATA_DIR=$gpu/data EMO_CACHE_DIR=/tmp/emo-cache EMO_QUEUE_DIR=/tmp/queue
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# Decode the compact copy once, before the runs start side by side.
python3 -c "from emo.data.fer2013 import load_fer2013; load_fer2013('$gpu/data')" || exit 1
pids=()
for name in "$@"; do
  mkdir -p "$EMO_QUEUE_DIR/$name"
  python3 research/train_queue.py one "$name" --no-commit >"$EMO_QUEUE_DIR/$name.out" 2>&1 &
  pids+=($!)
done
# Stop what is still training when the budget is spent (the runner passes SIGTERM on).
# Its output goes nowhere and its sleep is ended with it: a sleep left behind holding stdout kept
# `gpu_queue.sh ... | grep` waiting out the whole budget after the runs had finished.
(sleep "$budget"; for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
 sleep 30; pkill -KILL -f "python3 -m emo.train") >/dev/null 2>&1 &
watchdog=$!
for p in "${pids[@]}"; do wait "$p"; done
pkill -P "$watchdog" 2>/dev/null
kill "$watchdog" 2>/dev/null
done_runs=()
for name in "$@"; do
  tail -n 3 "$EMO_QUEUE_DIR/$name.out"
  if [ -f "runs/$name/result.json" ]; then
    done_runs+=("runs/$name")
  elif [ -f "$EMO_QUEUE_DIR/$name/checkpoints/last.ckpt" ]; then
    mkdir -p "/tmp/resume/runs/$name"
    last="$EMO_QUEUE_DIR/$name/checkpoints/last.ckpt"
    if [ "$(stat -c %s "$last")" -gt 30000000 ]; then
      # A large net's last.ckpt (vgg_fer: 126 MB) cannot come back whole: its live weights in fp16,
      # without the weight average and SGD's momentum, still resume (~21 MB).
      python3 research/train_queue.py lean "$last" "/tmp/resume/runs/$name/resume.ckpt"
    else
      cp "$last" "/tmp/resume/runs/$name/resume.ckpt"
    fi
    cp "$EMO_QUEUE_DIR/$name/queue_time.json" "/tmp/resume/runs/$name/" 2>/dev/null
    tar czf "$out/resume-$name.tgz" -C /tmp/resume "runs/$name"
    if [ "$(stat -c %s "$out/resume-$name.tgz")" -gt 45000000 ]; then
      # Too big to come back (8 files of 16 MiB): a call to this machine while it is still warm
      # resumes it from $EMO_QUEUE_DIR; a fresh machine starts it again.
      echo "$name: last.ckpt too big to bring back; resumes only on this machine"
      rm "$out/resume-$name.tgz"
    elif [ "$(stat -c %s "$out/resume-$name.tgz")" -gt 15000000 ]; then
      split -b 15m -d "$out/resume-$name.tgz" "$out/resume-$name.tgz."
      rm "$out/resume-$name.tgz"
    fi
  fi
done
if [ ${#done_runs[@]} -gt 0 ]; then
  tar czf "$out/results.tgz" "${done_runs[@]}"
  # A large net's packed weights (vgg_fer: 21 MB in fp16) make it more than one file may bring
  # back (16 MiB): parts of 15 MiB, joined by cat results.tgz.* | tar xz.
  if [ "$(stat -c %s "$out/results.tgz")" -gt 15000000 ]; then
    split -b 15m -d "$out/results.tgz" "$out/results.tgz." && rm "$out/results.tgz"
  fi
fi
# TensorBoard files (confusion-matrix images every epoch) would make it too big to come back.
[ -d "$EMO_QUEUE_DIR" ] && tar czf "$out/logs.tgz" -C "$EMO_QUEUE_DIR" --exclude='*.ckpt' --exclude='events.out.tfevents.*' .
[ $# -eq 0 ] && echo "no run named: .gpu/ staged in $gpu for this machine's later calls"
ls -l "$out"

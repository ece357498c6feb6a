"""The CPU training queue: the runs listed in runs/queue.yaml, one after another, never idle.

    python research/train_queue.py start      # in the background (what `make queue` does); log: QUEUE_DIR/queue.log
    python research/train_queue.py status     # each run: done / running (epoch) / resumable / pending
    python research/train_queue.py stop       # stop the runner and its training (the last epoch is kept)
    python research/train_queue.py run        # in the foreground
    python research/train_queue.py finish NAME   # score and pack a run that finished training
    python research/train_queue.py one NAME      # train and finish one run now, even a held one
                                       # (what research/gpu_queue.sh runs, several side by side)
    python research/train_queue.py save       # commit the running run's last.ckpt (runs/NAME/resume.ckpt),
                                       # so a session on another machine can resume it

A run is skipped when its result is committed (``runs/NAME/result.json`` and ``runs/NAME/NAME.ckpt``),
or while its entry has ``hold: <reason>`` (a run that another run's result decides whether to spend
CPU hours on; delete the line to let it run).
Otherwise its command runs with ``hydra.run.dir=QUEUE_DIR/NAME`` added, plus
``ckpt_path=.../last.ckpt`` when an earlier attempt left one (or ``runs/NAME/resume.ckpt`` was
committed). QUEUE_DIR is ``$EMO_QUEUE_DIR`` or ``~/.cache/emo/queue``: outside the work tree, so
it survives a new checkout on the same machine. When training ends the runner scores the best
checkpoint (chosen by the run's own monitor) on PublicTest with TTA none and flip, and commits:

* ``runs/NAME/NAME.ckpt``       the weights in fp16 (``emo.models.pack.pack``) with those metrics;
* ``runs/NAME/train_probs.pt``  its flip-TTA probabilities for every Training face (soft targets);
* ``runs/NAME/val_probs.pt``    its PublicTest probabilities (none, flip), for choosing ensembles;
* ``runs/NAME/result.json``     the command, epochs, wall time and PublicTest metrics.

PrivateTest is never scored here: that happens once, for the models that enter the README.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"
QUEUE_FILE = RUNS / "queue.yaml"
QUEUE_DIR = Path(os.environ.get("EMO_QUEUE_DIR", Path.home() / ".cache" / "emo" / "queue")).expanduser()
PID_FILE = QUEUE_DIR / "runner.pid"
LOG_FILE = QUEUE_DIR / "queue.log"
DATA_DIR = os.environ.get("EMO_DATA_DIR", str(ROOT / "data" / "fer2013"))


def say(msg: str) -> None:
    print(f"[{dt.datetime.now():%Y-%m-%d %H:%M:%S}] {msg}", flush=True)


def load_queue() -> list[dict]:
    entries = yaml.safe_load(QUEUE_FILE.read_text())["runs"]
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        sys.exit(f"{QUEUE_FILE}: run names must be unique")
    for e in entries:
        if not e["command"].startswith("python -m emo.train "):
            sys.exit(f"{QUEUE_FILE}: run {e['name']}'s command must start with 'python -m emo.train'")
    return entries


def is_done(name: str) -> bool:
    return (RUNS / name / "result.json").is_file() and (RUNS / name / f"{name}.ckpt").is_file()


def run_dir(name: str) -> Path:
    return QUEUE_DIR / name


def last_ckpt(name: str) -> Path | None:
    """The checkpoint to resume from: this machine's last.ckpt, else a committed resume.ckpt."""
    local = run_dir(name) / "checkpoints" / "last.ckpt"
    committed = RUNS / name / "resume.ckpt"
    if not local.is_file() and committed.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(committed, local)
        timing = RUNS / name / "queue_time.json"  # the time spent before it was saved
        if timing.is_file():
            shutil.copy2(timing, run_dir(name) / "queue_time.json")
    return local if local.is_file() else None


def wall_so_far(timing: Path) -> float:
    """Seconds of training a run has had, over every attempt and machine (``queue_time.json``:
    ``wall_s`` of the attempts that ended, ``since``: when the one in progress started)."""
    if not timing.is_file():
        return 0.0
    t = json.loads(timing.read_text())
    return t["wall_s"] + (time.time() - t["since"] if "since" in t else 0.0)


def trained_on(timing: Path) -> list[str]:
    """The devices a run has trained on so far (``queue_time.json``), in order."""
    return json.loads(timing.read_text()).get("devices", []) if timing.is_file() else []


def resumable(path: Path) -> str | None:
    """Why ``path`` cannot be resumed by today's code, or None when it can."""
    # emo (torch, Lightning) is imported where it is used: `status` and `stop` answer at once.
    from emo.errors import EmoError
    from emo.models.checkpoint import read_checkpoint
    from emo.models.module import load_checkpoint

    try:
        load_checkpoint(path)
        ckpt = read_checkpoint(path)
        if "optimizer_states" not in ckpt or "loops" not in ckpt:
            return "it holds weights only (no optimizer or loop state)"
    except EmoError as err:
        return str(err)
    except Exception as err:  # anything else torch or Lightning raises on a foreign file
        return f"{type(err).__name__}: {err}"
    return None


def epoch_of(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("epoch", -1)) + 1
    except Exception:
        return None


def lean_resume(src: Path, dst: Path) -> Path:
    """A smaller copy of a ``last.ckpt`` that still resumes: the live weights (not their average)
    in fp16, no weight-average state, SGD's momentum left out and any other optimizer state (Adam's
    moments) in fp16. On resuming, the fp16 values are cast back to the parameters' fp32, the EMA
    callback restarts its average from the live weights (it spans a few epochs, so a run resumed
    well before its end ends with a full one), and SGD rebuilds its momentum from zero within ~10
    steps, as at a run's first step. A sixth of the size with SGD (vgg_fer: 126 MB to ~21 MB), so
    a large net's resume point fits what comes back from a lent GPU (research/gpu_queue.sh)."""
    import torch

    def half(t):
        fits = torch.is_tensor(t) and t.is_floating_point() and (t.numel() == 0 or t.abs().max() < 6e4)
        return t.half() if fits else t

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    live = ckpt.pop("current_model_state", None)  # written by the weight-averaging callback
    ckpt.pop("averaging_state", None)
    ckpt["state_dict"] = {k: half(v) for k, v in (live if live is not None else ckpt["state_dict"]).items()}
    for opt in ckpt.get("optimizer_states", []):
        for state in opt["state"].values():
            state.pop("momentum_buffer", None)
            state.update({k: half(v) for k, v in state.items() if k != "step"})
    torch.save(ckpt, dst)
    return dst


# ------------------------------------------------------------------------------------- running
def train(entry: dict) -> bool:
    name = entry["name"]
    out = run_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    args = shlex.split(entry["command"])[3:] + [f"hydra.run.dir={out}"]
    last, since_epoch = last_ckpt(name), 0
    if last is not None:
        why = resumable(last)
        if why is None:
            since_epoch = epoch_of(last) or 0
            say(f"{name}: resuming from {last} (epoch {since_epoch})")
            args.append(f"ckpt_path={last}")
        else:
            stale = out.with_name(f"{name}.stale-{dt.datetime.now():%Y%m%d-%H%M%S}")
            say(f"{name}: cannot resume {last}: {why}; moved to {stale}, starting afresh")
            out.rename(stale)
            out.mkdir(parents=True)
    else:
        say(f"{name}: starting: {entry['command']}")
    timing = out / "queue_time.json"
    spent, start = wall_so_far(timing), time.time()
    devices = trained_on(timing)
    devices += [d for d in [device_name()] if d not in devices]
    timing.write_text(
        json.dumps({"wall_s": spent, "since": start, "since_epoch": since_epoch, "devices": devices}) + "\n"
    )
    with open(out / "train.log", "a") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emo.train", *args], cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT
        )
        signal.signal(signal.SIGTERM, lambda *_: STOPPING.append(proc.send_signal(signal.SIGTERM)))
        rc = proc.wait()
    timing.write_text(json.dumps({"wall_s": spent + time.time() - start, "devices": devices}) + "\n")
    if rc != 0:
        say(f"{name}: training exited with {rc}; see {out / 'train.log'}")
        return False
    return True


def choose_tta(val: dict, monitor: dict, min_acc: float = 0.70) -> str:
    """The TTA a run's PublicTest scores (``{tta: {"accuracy", "agreement", ...}}``) pick, by the
    run's own rule: accuracy, or for a run that monitored ``val/agree_ok`` (a people run, issue
    15) agreement with people among the TTAs at ``min_acc`` FER-2013 accuracy or more."""
    if "val/agree_ok" in monitor:
        return max(val, key=lambda t: val[t]["agreement"] - (val[t]["accuracy"] < min_acc))
    return max(val, key=lambda t: val[t]["accuracy"])


def finish(entry: dict, commit: bool = True) -> dict:
    """Score the run's best checkpoint on PublicTest, pack it and its probabilities, commit."""
    # Imported here, as in resumable(): the queue's light commands need none of it.
    import torch

    from emo.data import FER2013DataModule
    from emo.data.soft_targets import save_soft_targets
    from emo.evaluate import split_probs
    from emo.models.module import load_checkpoint
    from emo.models.pack import pack
    from emo.report.metrics import score

    name, out = entry["name"], run_dir(entry["name"])
    summary = json.loads((out / "metrics.json").read_text())
    best, scored = summary["checkpoint"], "best"
    if not Path(best).is_file() and (out / "checkpoints" / "last.ckpt").is_file():
        # Trained (in part) on another machine, which kept the best epoch's file: the last epoch
        # is what there is (with cosine decay to zero and EMA, within a few faces of the best).
        say(f"{name}: {best} is not on this machine; scoring the last epoch instead")
        best, scored = str(out / "checkpoints" / "last.ckpt"), "last"
    model = load_checkpoint(best)
    if torch.cuda.is_available():  # on a lent GPU machine (research/gpu_queue.sh)
        model = model.cuda()
    pre = model.preprocess
    dm = FER2013DataModule(
        data_dir=DATA_DIR,
        classes=model.class_names,
        augment=None,
        mean=pre.mean,
        std=pre.std,
        labels=model.labels,  # an eight-class FER+ model is scored on FER+ majority labels
    )
    dm.setup()
    labels = dm.datasets["val"].labels
    val, probs = {}, {}
    for tta in ("none", "flip"):
        p = split_probs(model, dm, "val", tta)
        probs[tta] = p.half()
        s = score(p, labels, model.class_names, dm.people.get("val"))
        val[tta] = {k: s[k] for k in ("accuracy", "macro_f1", "agreement", "agreement_n") if k in s}
    min_acc = model.hparams.get("agree_min_acc", 0.70)
    tta = choose_tta(val, summary.get("best") or {}, min_acc)  # chosen on PublicTest
    dest = RUNS / name
    dest.mkdir(parents=True, exist_ok=True)
    hp = model.hparams
    wall = wall_so_far(out / "queue_time.json") or None
    devices = trained_on(out / "queue_time.json") or [device_name()]
    result = {
        "name": name,
        "command": entry["command"],
        "why": entry.get("why", ""),
        "arch": hp.arch,
        "params": sum(p.numel() for p in model.net.parameters()),
        "epochs": summary.get("epochs"),
        "best_epoch": None if epoch_of(Path(best)) is None else epoch_of(Path(best)) - 1,
        "scored": scored,  # best (by the run's monitor), or last when the best file was elsewhere
        "monitor": summary.get("best"),
        "publictest": val,
        "tta": tta,
        "wall_hours": round(wall / 3600, 2) if wall else None,
        "device": " + ".join(devices),  # what trained it (a run resumed elsewhere names both)
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
    }
    pack(best, dest / f"{name}.ckpt", {"split": "val", "publictest": val, "tta": tta}, fp16=True)
    train_p = split_probs(model, dm, "train", "flip")
    save_soft_targets(
        dest / "train_probs.pt", train_p, model.class_names, dm.train_fingerprint, members=[name], tta="flip"
    )
    torch.save({"class_names": model.class_names, **probs}, dest / "val_probs.pt")
    (dest / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (dest / "resume.ckpt").unlink(missing_ok=True)
    (dest / "queue_time.json").unlink(missing_ok=True)
    say(f"{name}: PublicTest {val['none']['accuracy']:.2%} (none), {val['flip']['accuracy']:.2%} (flip)")
    if commit:
        git_commit(dest, f"queue: {name} done, PublicTest {val[tta]['accuracy']:.2%} ({tta} TTA)")
    return result


def device_name() -> str:
    """This machine's training device: the GPU's name, else the CPU's core count and whether it
    trains in bf16 (native) or fp32: about 3x apart per epoch (README, "Benchmarks")."""
    import torch

    from emo.cli import native_bf16

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores, {'bf16' if native_bf16() else 'fp32'}"


def run_one(entry: dict, commit: bool = True) -> bool:
    """Train and finish one run, held or not (``one``; research/gpu_queue.sh)."""
    if is_done(entry["name"]):
        say(f"{entry['name']}: already done")
        return True
    if not train(entry) or STOPPING:  # stopped: Lightning may end a SIGTERMed fit with 0
        say(f"{entry['name']}: stopped before its last epoch; it resumes from its last.ckpt")
        return False
    finish(entry, commit)
    return True


def git_commit(path: Path, message: str) -> None:
    """Commit ``path`` alone (other staged work is left as it is); retried while git is busy."""
    for _ in range(30):
        add = subprocess.run(["git", "add", "-A", "--", str(path)], cwd=ROOT, capture_output=True, text=True)
        done = add.returncode == 0 and subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", str(path)], cwd=ROOT, capture_output=True, text=True
        )
        if done and done.returncode == 0:
            say(f"committed {path.relative_to(ROOT)}: {message}")
            return
        unchanged = ["git", "diff", "--cached", "--quiet", "--", str(path)]
        if add.returncode == 0 and subprocess.run(unchanged, cwd=ROOT).returncode == 0:
            return  # nothing new under path (e.g. a run saved again at the same epoch)
        time.sleep(10)  # another git process holds the index lock
    say(f"could not commit {path}: commit it by hand")


#: Set by SIGTERM (``stop``): the training in progress ends and no further run starts.
STOPPING: list = []


def run_queue(commit: bool = True) -> None:
    """Run the first pending run, then read the queue file again (runs may be added meanwhile)."""
    failed: set[str] = set()
    while True:
        pending = [
            e for e in load_queue() if not (is_done(e["name"]) or e.get("hold") or e["name"] in failed)
        ]
        if not pending:
            break
        entry = pending[0]
        ok = train(entry)
        if STOPPING:
            say("stopped: `make queue` resumes from the last finished epoch")
            return
        if not ok:
            failed.add(entry["name"])
            continue
        try:
            finish(entry, commit)
        except Exception as err:  # keep the queue going; the run can be finished by hand
            failed.add(entry["name"])
            say(f"{entry['name']}: finishing failed ({type(err).__name__}: {err}); retry with `finish`")
    say(f"queue empty: every run is done{' or failed: ' + ', '.join(sorted(failed)) if failed else ''}")


# ------------------------------------------------------------------------------------ control
def running_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start() -> None:
    pid = running_pid()
    if pid:
        print(f"the queue is already running (pid {pid}); log: {LOG_FILE}")
        return
    from emo.data.fer2013 import find_source
    from emo.errors import EmoError

    try:  # every run would stop at once without it, and be marked failed
        find_source(DATA_DIR)
    except EmoError as err:
        sys.exit(f"the queue was not started: {err} (its runs read EMO_DATA_DIR, else data/fer2013)")
    QUEUE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_FILE, "a") as log:
        proc = subprocess.Popen(
            [sys.executable, __file__, "run"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PID_FILE.write_text(str(proc.pid))
    print(f"queue started (pid {proc.pid}); follow it with: tail -f {LOG_FILE}")


def stop() -> None:
    pid = running_pid()
    if not pid:
        print("the queue is not running")
        return
    os.killpg(pid, signal.SIGTERM)  # the runner and its training (its own session)
    print(f"stopped the queue (pid {pid}); `make queue` resumes from the last epoch")


def pace(out: Path) -> str:
    """How fast the run training in ``out`` goes on this machine and how long it has to go, from
    the epochs saved since its attempt started (``queue_time.json``) and its ``max_epochs``; empty
    before the attempt's first epoch is saved or when the run is not training."""
    timing, last, config = (
        out / "queue_time.json",
        out / "checkpoints" / "last.ckpt",
        out / ".hydra" / "config.yaml",
    )
    if not (timing.is_file() and last.is_file()):
        return ""
    t = json.loads(timing.read_text())
    epoch = epoch_of(last)
    if "since" not in t or epoch is None or epoch <= t.get("since_epoch", epoch):
        return ""
    per = (last.stat().st_mtime - t["since"]) / (epoch - t["since_epoch"])
    text = f"{per / 60:.1f} min an epoch here"
    if config.is_file():
        from omegaconf import OmegaConf

        left = (OmegaConf.load(config).trainer.max_epochs - epoch) * per / 3600
        text += f", ~{left:.1f} h to go"
    return text


def status() -> None:
    pid = running_pid()
    print(f"runner: {'pid ' + str(pid) if pid else 'not running'}; run dirs: {QUEUE_DIR}")
    for e in load_queue():
        name = e["name"]
        if is_done(name):
            r = json.loads((RUNS / name / "result.json").read_text())
            acc = r["publictest"][r["tta"]]["accuracy"]
            state = f"done: PublicTest {acc:.2%} ({r['tta']})"
        elif e.get("hold"):
            state = f"held: {e['hold']}"
        else:
            last = run_dir(name) / "checkpoints" / "last.ckpt"
            state = f"epoch {epoch_of(last)} saved" if last.is_file() else "pending"
            speed = pace(run_dir(name)) if pid else ""
            state += f" ({speed})" if speed else ""
        print(f"  {name:<24} {state}")


def save() -> None:
    """Copy each unfinished run's last.ckpt to runs/NAME/resume.ckpt (git-ignored: carry it to another
    machine to resume there) and commit its time so far."""
    for e in load_queue():
        last = run_dir(e["name"]) / "checkpoints" / "last.ckpt"
        if is_done(e["name"]) or not last.is_file():
            continue
        dest = RUNS / e["name"] / "resume.ckpt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(last, dest)
        why = resumable(dest)  # caught mid-write? then it would not resume anywhere
        if why:
            say(f"{e['name']}: not saved, {dest} would not resume ({why}); run save again")
            dest.unlink()
            continue
        # The time spent so far travels with it (the run's CPU time in result.json and the README).
        spent = wall_so_far(run_dir(e["name"]) / "queue_time.json")
        devices = trained_on(run_dir(e["name"]) / "queue_time.json")
        (dest.parent / "queue_time.json").write_text(
            json.dumps({"wall_s": round(spent), "devices": devices}) + "\n"
        )
        git_commit(dest.parent, f"queue: {e['name']} resumable at epoch {epoch_of(dest)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status", "run", "finish", "one", "save", "lean"])
    parser.add_argument(
        "name", nargs="?", help="the run to finish (finish) or to train and finish (one); lean: SRC.ckpt"
    )
    parser.add_argument("dst", nargs="?", help="lean: where the smaller resume point goes")
    parser.add_argument("--no-commit", action="store_true", help="write results but do not commit them")
    args = parser.parse_args()
    if args.action in ("finish", "one"):
        entries = {e["name"]: e for e in load_queue()}
        if args.name not in entries:
            sys.exit(f"no run named {args.name!r} in {QUEUE_FILE}")
        if args.action == "finish":
            finish(entries[args.name], not args.no_commit)
        elif not run_one(entries[args.name], not args.no_commit):
            sys.exit(1)
    elif args.action == "lean":
        if not (args.name and args.dst):
            sys.exit("usage: train_queue.py lean SRC.ckpt DST.ckpt")
        dst = lean_resume(Path(args.name), Path(args.dst))
        say(f"{dst}: {dst.stat().st_size / 1e6:.1f} MB (from {Path(args.name).stat().st_size / 1e6:.1f} MB)")
    elif args.action == "run":
        run_queue(not args.no_commit)
    else:
        {"start": start, "stop": stop, "status": status, "save": save}[args.action]()


if __name__ == "__main__":
    main()

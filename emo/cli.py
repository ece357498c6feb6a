"""Command-line plumbing shared by the entry points: Hydra instantiation and option checks (group
options, the numbers people type), the trainer's precision, the command that resumes a run."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from emo.errors import EmoError, exit_on_emo_error
from emo.paths import CONF_DIR

log = logging.getLogger(__name__)


def instantiate(cfg: Any, *args, **kwargs) -> Any:
    """``hydra.utils.instantiate`` that lets an :class:`EmoError` through unwrapped.

    Hydra wraps whatever a constructor raises in ``InstantiationException``; the user's one-line
    message (unknown preset, missing data) must reach the entry point as it was raised.
    """
    try:
        return hydra.utils.instantiate(cfg, *args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, EmoError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping (callbacks, loggers); ``null`` entries are off."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def native_bf16() -> bool:
    """Whether bf16 arithmetic is fast here: a GPU that supports it, or a CPU with AVX512-BF16 or
    AMX (without them PyTorch emulates bf16: 1.3-1.6x slower than fp32 on a 2-core Xeon, 8x on a
    2-core EPYC with AVX2 only)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume no
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: Any) -> Any:
    """Lightning's precision, with ``auto``: ``bf16-mixed`` where bf16 is native, else ``32-true``."""
    if precision != "auto":
        return precision
    chosen = "bf16-mixed" if native_bf16() else "32-true"
    log.info("trainer.precision=auto: %s", chosen)
    return chosen


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of a config group, those in its subfolders as ``sub/name`` (``experiment=release/cnn3``);
    ``_``-prefixed files are shared parts, not options."""
    root = conf_dir / group
    return sorted(
        p.relative_to(root).with_suffix("").as_posix()
        for p in root.rglob("*.yaml")
        if not p.stem.startswith("_")
    )


#: ``key=NAME`` overrides that choose a config group's option by another name.
GROUP_ALIASES = {"data.augment": "augment"}


def group_overrides(argv: list[str]) -> list[str]:
    """``data.augment=strong`` as ``augment=strong``: the augment group, and nothing else, turns a
    preset's name into its flags. Other arguments are returned as they are."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in GROUP_ALIASES and value and value[0] not in "{[":
            arg = f"{GROUP_ALIASES[key]}={value}"
        out.append(arg)
    return out


def compose(overrides: list[str] = (), config_name: str = "train") -> DictConfig:
    """``conf/<config_name>.yaml`` composed as the command line would (outside ``@hydra.main``:
    ``paths.output_dir``, which Hydra's run sets, is left to the caller)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return hydra_compose(config_name, overrides=group_overrides(list(overrides)))
    finally:
        GlobalHydra.instance().clear()


def check_group_choices(argv: list[str], conf_dir: Path) -> None:
    """Fail in one line on ``group=option`` overrides naming an option that does not exist.

    Hydra reports these itself, but over a dozen lines with its search path; users mistype
    ``model=`` and ``augment=`` often enough to deserve the short answer.
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or "." in key or key.startswith("hydra") or "(" in value:
            continue  # a value override, Hydra's own groups, or a sweep function like glob(*)
        if not (conf_dir / key).is_dir():
            continue
        options = group_options(key, conf_dir)
        for choice in value.split(","):  # multirun: model=a,b
            if choice not in options and choice != "null":
                raise EmoError(f"unknown {key} {choice!r}: choose one of {', '.join(options)}")


def _whole(low: int, *also: int | None) -> Callable[[Any], bool]:
    """A whole number >= ``low`` (not a bool, not 3.0), or one of ``also`` (-1, ``None``)."""
    return lambda v: (type(v) is int and (v >= low or v in also)) or (v is None and None in also)


def _number(low: float, high: float = math.inf, *, open_low: bool = False, open_high: bool = False):
    """A finite number between ``low`` and ``high`` (ends included unless ``open_...``)."""

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return ok


def _nullable(rule: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or rule(v)


_FRACTION_OR_COUNT = _nullable(lambda v: _whole(0)(v) or _number(0, 1)(v))
#: The numbers people type on the command line, what each must be, and the fix that says so.
#: Keys absent from a config (``evaluate`` has no trainer; ``callbacks.ema=null``) are skipped.
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (_whole(0), "give a whole number >= 0"),
    "trainer.max_epochs": (_whole(1, -1, None), "give a whole number >= 1 (-1: no limit)"),
    "trainer.max_steps": (_whole(1, -1, None), "give a whole number >= 1 (-1: no limit)"),
    "trainer.min_epochs": (_whole(0, None), "give a whole number >= 0"),
    "trainer.accumulate_grad_batches": (_whole(1), "give a whole number >= 1"),
    "trainer.log_every_n_steps": (_whole(1), "give a whole number >= 1"),
    "trainer.check_val_every_n_epoch": (_whole(1, None), "give a whole number >= 1"),
    "trainer.limit_train_batches": (_FRACTION_OR_COUNT, "give a fraction 0..1 or a whole number of batches"),
    "trainer.limit_val_batches": (_FRACTION_OR_COUNT, "give a fraction 0..1 or a whole number of batches"),
    "trainer.limit_test_batches": (_FRACTION_OR_COUNT, "give a fraction 0..1 or a whole number of batches"),
    "trainer.gradient_clip_val": (_nullable(_number(0)), "give a number >= 0 (or null: no clipping)"),
    "data.batch_size": (_whole(1), "give a whole number >= 1"),
    "data.num_workers": (_whole(0), "give a whole number >= 0"),
    "data.val_fraction": (_number(0, 1, open_low=True, open_high=True), "give a fraction between 0 and 1"),
    "data.split_seed": (_whole(0), "give a whole number >= 0"),
    "data.ferplus_mix": (_number(0, 1), "give a weight between 0 and 1"),
    "data.mean": (_number(0, 1), "give the mean grey level on the 0..1 scale"),
    "data.std": (_number(0, 1, open_low=True), "give the grey-level standard deviation (0..1 scale, > 0)"),
    "optimizer.lr": (_number(0, open_low=True), "give a number > 0"),
    "optimizer.weight_decay": (_number(0), "give a number >= 0"),
    "optimizer.momentum": (_number(0, 1, open_high=True), "give a number in [0, 1)"),
    "scheduler.warmup_epochs": (_whole(0), "give a whole number >= 0"),
    "scheduler.eta_min": (_number(0), "give a number >= 0"),
    "model.label_smoothing": (_number(0, 1, open_high=True), "give a number in [0, 1)"),
    "model.distill_alpha": (
        _nullable(_number(0, 1)),
        "give a weight between 0 and 1 (or null: no distillation)",
    ),
    "model.distill_temperature": (_number(0, open_low=True), "give a number > 0"),
    "callbacks.early_stopping.patience": (_whole(0), "give a whole number of epochs >= 0"),
    "callbacks.ema.decay": (_number(0, 1, open_low=True, open_high=True), "give a number between 0 and 1"),
}
_ABSENT = object()


def check_values(cfg: DictConfig) -> None:
    """Fail in one line on a mistyped number (``trainer.max_epochs=abc``, ``data.batch_size=0``):
    before anything is built, not as a traceback from deep inside torch or Lightning."""
    for key, (ok, fix) in VALUE_RULES.items():
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT)
        except OmegaConfBaseException:  # an interpolation only Hydra's run resolves: not a number
            continue
        if value is not _ABSENT and not OmegaConf.is_config(value) and not ok(value):
            raise EmoError(f"{key}={value!r}: {fix}")


def resume_command(output_dir: str | os.PathLike, ckpt: str | os.PathLike, module: str = "emo.train") -> str:
    """The command that resumes this Hydra job from ``ckpt``, writing on into ``output_dir``: the
    job's overrides as typed (``...`` outside Hydra), its folder and the checkpoint."""
    from hydra.core.hydra_config import HydraConfig

    from emo.models.stopping import shown_path  # Lightning, imported by those who train

    if HydraConfig.initialized():
        typed = [
            o
            for o in HydraConfig.get().overrides.task
            if o.partition("=")[0].lstrip("+~") not in ("ckpt_path", "hydra.run.dir")
        ]
    else:
        typed = ["..."]
    where = [f"hydra.run.dir={shown_path(output_dir)}", f"ckpt_path={shown_path(ckpt)}"]
    return shlex.join(["python", "-m", module, *typed, *where])


#: Hydra plugins behind config options, and the extra that installs them.
PLUGINS = {
    "hparams_search": {"optuna": "hydra_plugins.hydra_optuna_sweeper"},
    "hydra/sweeper": {"optuna": "hydra_plugins.hydra_optuna_sweeper"},
    "hydra/launcher": {
        "joblib": "hydra_plugins.hydra_joblib_launcher",
        "submitit_local": "hydra_plugins.hydra_submitit_launcher",
        "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
        "slurm": "hydra_plugins.hydra_submitit_launcher",
    },
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (hydra_plugins) is missing too
        return False


def check_plugins(argv: list[str]) -> None:
    """Fail in one line when an override needs a Hydra plugin that is not installed."""
    for arg in argv:
        key, _, value = arg.partition("=")
        module = PLUGINS.get(key.lstrip("+~"), {}).get(value)
        if module and not _importable(module):
            raise EmoError(f"{key}={value} needs a Hydra plugin: pip install 'emo[sweeps]'")


@exit_on_emo_error
def run_hydra_cli(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function after checking its group options from the command line."""
    sys.argv[1:] = group_overrides(sys.argv[1:])
    check_group_choices(sys.argv[1:], CONF_DIR)
    check_plugins(sys.argv[1:])
    main()

"""Command-line plumbing shared by the entry points: Hydra instantiation and option checks, the
trainer's precision."""

from __future__ import annotations

import importlib.util
import logging
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
from omegaconf import DictConfig

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

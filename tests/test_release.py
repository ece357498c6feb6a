"""Every shipped model has its whole recipe in one config: conf/experiment/release/<name>.yaml
(an ensemble: one per member), which the index's command names and whose hyper-parameters are
the ones its checkpoint recorded when it was trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emo import weights
from emo.cli import compose
from emo.data.soft_targets import read_soft_targets, resolve_soft_targets

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "conf" / "experiment" / "release"
#: The bundled ensemble's members, in the order its checkpoint packs them.
ENSEMBLE_MEMBERS = ["ensemble/resnet_s_kd", "ensemble/resnet_s", "vgg_fer", "ensemble/vgg_m"]


def release_configs(name: str) -> list[str]:
    return [f"release/{m}" for m in ENSEMBLE_MEMBERS] if weights.is_ensemble(name) else [f"release/{name}"]


def recorded_hparams(name: str) -> list[dict]:
    ckpt = torch.load(weights.checkpoint_path(name), map_location="cpu", weights_only=False)
    if weights.is_ensemble(name):
        return [m["hyper_parameters"] | {"epoch": m["epoch"]} for m in ckpt["members"]]
    return [ckpt["hyper_parameters"] | {"epoch": ckpt["epoch"]}]


def test_every_bundled_model_has_a_release_config_and_the_index_names_it():
    for name in weights.available():
        for config in release_configs(name):
            assert (ROOT / "conf" / "experiment" / f"{config}.yaml").is_file(), config
        command = weights.info(name)["command"]
        assert f"python -m emo.train experiment={release_configs(name)[0]}" in command, (name, command)
    released = {p.relative_to(RELEASE).with_suffix("").as_posix() for p in RELEASE.rglob("*.yaml")}
    assert released == {c.removeprefix("release/") for n in weights.available() for c in release_configs(n)}


def test_release_soft_targets_ship_in_the_package():
    """A recipe that learns from stored probabilities names a file the package ships, not a run's."""
    for path in RELEASE.rglob("*.yaml"):
        text = path.read_text()
        assert "runs/" not in text.replace("# ", ""), path
    for name in ("ens", "ens2", "vgg_s"):
        data = read_soft_targets(resolve_soft_targets(name))
        assert data["probs"].shape == (28709, 7) and data["fingerprint"]


@pytest.mark.slow
@pytest.mark.parametrize("name", weights.available())
def test_release_config_matches_the_shipped_checkpoint(name):
    """Composing experiment=release/<name> gives the hyper-parameters the checkpoint recorded."""
    for config, recorded in zip(release_configs(name), recorded_hparams(name), strict=True):
        cfg = compose([f"experiment={config}"])
        model = cfg.model
        assert model.arch == recorded["arch"], config
        assert dict(model.net_kwargs) == recorded["net_kwargs"], config
        for key in ("label_smoothing", "class_weights", "distill_alpha", "distill_temperature", "val_tta"):
            if key in recorded and key in model:
                assert model[key] == recorded[key], (config, key)
        if recorded.get("distill_alpha") is not None:
            # The checkpoint names the file its run read; the release names the same file as
            # shipped in emo/data/targets/ (moved there unchanged).
            assert model.distill_targets == Path(recorded["distill_targets"]).stem, config
            assert resolve_soft_targets(model.distill_targets).is_file()
        else:
            assert not model.get("distill_targets"), config
        if "monitor" in recorded:  # older checkpoints did not record it
            assert cfg.monitor == recorded["monitor"], config
        labels = recorded.get("labels", "fer2013")  # older checkpoints: FER-2013's, unrecorded
        assert cfg.data.labels == labels and len(recorded["class_names"]) == (
            8 if cfg.data.labels == "ferplus" else 7
        ), config
        assert (cfg.data.mean, cfg.data.std) == (
            recorded["preprocess"]["mean"],
            recorded["preprocess"]["std"],
        )
        assert recorded["epoch"] < cfg.trainer.max_epochs, config  # the selected epoch lies in the budget

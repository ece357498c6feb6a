"""Every config option composes and instantiates; augmentation can be chosen both ways."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from emo.cli import check_group_choices, group_options, group_overrides, instantiate
from emo.errors import EmoError
from emo.paths import CONF_DIR
from emo.train import build_trainer


def options(group: str) -> list[str]:
    return group_options(group)


def build(cfg):
    dm = instantiate(cfg.data)
    model = instantiate(cfg.model, class_names=dm.class_names, preprocess=dm.preprocess)
    return dm, model, build_trainer(cfg)


@pytest.mark.parametrize(
    "override",
    [
        f"{g}={o}"
        for g in (
            "model",
            "optimizer",
            "scheduler",
            "augment",
            "trainer",
            "debug",
            "experiment",
            "hparams_search",
        )
        for o in options(g)
    ],
)
def test_every_option_composes_and_instantiates(make_cfg, override):
    cfg = make_cfg(override)
    # Values an option requires from the command line (e.g. distillation teachers) must be named.
    missing = OmegaConf.missing_keys(cfg)
    assert missing <= {"model.distill_from"}, missing
    if missing:
        cfg.model.distill_from = ["teacher.ckpt"]  # loaded only when fitting
    dm, model, trainer = build(cfg)
    model.trainer = trainer
    opt = model.configure_optimizers()
    optimizer = opt["optimizer"] if isinstance(opt, dict) else opt
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert model.net(torch.zeros(2, 1, 48, 48)).shape == (2, dm.num_classes)


def test_evaluate_reads_the_data_as_training_does(make_cfg):
    """One data config for both doors: evaluate sees the faces, splits and statistics train saw."""
    ev, tr = make_cfg("ckpt_path=x.ckpt", config_name="evaluate"), make_cfg()
    assert OmegaConf.missing_keys(make_cfg(config_name="evaluate")) == {"ckpt_path"}
    assert {k: v for k, v in ev.data.items() if k != "augment"} == {
        k: v for k, v in tr.data.items() if k != "augment"
    }
    assert (ev.split, ev.tta) == ("test", "none")


@pytest.mark.parametrize("preset", group_options("augment"))
def test_augment_group_and_data_augment_select_the_same_pipeline(make_cfg, preset):
    a = instantiate(make_cfg(f"augment={preset}").data)
    b = instantiate(make_cfg(f"data.augment={preset}").data)
    assert a.augment == b.augment and a.augment["name"] == preset
    assert repr(a.train_augment) == repr(b.train_augment)


def test_augment_presets_add_the_promised_steps(make_cfg):
    def steps(preset):
        pipe = instantiate(make_cfg(f"augment={preset}", "data.device_augment=false").data).train_augment
        return [type(t).__name__ for t in pipe.transforms] if pipe else []

    assert steps("none") == []
    assert steps("light") == ["HorizontalFlip", "FaceFrameAffine"]
    assert steps("strong") == [
        "HorizontalFlip",
        "FaceFrameAffine",
        "MeanBrightnessContrast",
        "LogRatioErasing",
    ]
    assert steps("camera") == [  # strong + the camera steps, in the order a frame meets them
        "HorizontalFlip",
        "FaceFrameAffine",
        "CornerPerspective",
        "FaceFrameAffine",  # the detector's box, off
        "CentredIllumination",
        "MeanBrightnessContrast",
        "LogRatioErasing",
        "GaussianBlur",
        "RoundedGaussNoise",
        "ImageCompression",
    ]
    assert steps("camera_kept") == [  # the steps that passed issue 15's test one by one
        "HorizontalFlip",
        "FaceFrameAffine",
        "CornerPerspective",
        "MeanBrightnessContrast",
        "LogRatioErasing",
        "GaussianBlur",
        "RoundedGaussNoise",
        "ImageCompression",
    ]


def test_camera_steps_drop_one_at_a_time_from_the_command_line(make_cfg):
    dm = instantiate(make_cfg("augment=camera", "data.augment.jpeg=0").data)
    assert dm.augment["jpeg"] == 0 and dm.augment["blur"] > 0
    assert dm.batch_augment.flags.jpeg == 0 and dm.batch_augment.flags.noise > 0


def test_unknown_augment_preset_lists_valid_ones():
    with pytest.raises(
        EmoError, match="unknown augment 'medium': choose one of camera, camera_kept, light, none, strong"
    ):
        check_group_choices(group_overrides(["data.augment=medium"]), CONF_DIR)


def test_presets_are_named_only_through_the_augment_group(fer_dir):
    from emo.data import FER2013DataModule

    assert group_overrides(["data.augment=strong", "data.augment.erasing=0.1"]) == [
        "augment=strong",
        "data.augment.erasing=0.1",
    ]
    with pytest.raises(EmoError, match="chosen by name with Hydra's augment group"):
        FER2013DataModule(data_dir=str(fer_dir), augment="strong")
    with pytest.raises(EmoError, match="unknown flags \\['rotation'\\]"):
        FER2013DataModule(data_dir=str(fer_dir), augment={"rotation": 10})


def test_five_class_subset_sizes_the_head(make_cfg):
    cfg = make_cfg("data.classes=[angry,happy,sad,surprise,neutral]")
    dm, model, _ = build(cfg)
    assert model.net(torch.zeros(1, 1, 48, 48)).shape == (1, 5)
    assert model.hparams.class_names == ["angry", "happy", "sad", "surprise", "neutral"]


def test_class_weight_options(make_cfg):
    from emo.train import train

    metrics = train(make_cfg("debug=fdr", "model.class_weights=balanced", "model.label_smoothing=0.1"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    dm = instantiate(make_cfg().data)
    with pytest.raises(EmoError, match="3 values for 7 classes"):
        instantiate(make_cfg("model.class_weights=[1,2,3]").model, class_names=dm.class_names)
    with pytest.raises(EmoError, match="use null, balanced or a list"):
        instantiate(make_cfg("model.class_weights=inverse").model, class_names=dm.class_names)

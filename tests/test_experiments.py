"""Every ``experiment=`` composes and trains one batch of each split (``fast_dev_run``), with its
own callbacks (EMA included), on synthetic data: a recipe that only fails on the GPU machine or
after an hour is found here first. Slow: ten small runs, 1-2 minutes on 2 cores."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf, open_dict

from emo.cli import compose, group_options
from emo.train import train

#: What an experiment needs from the command line, given here (its README command gives it).
NEEDS = {
    # teachers: the bundled vgg_s (the real command names a vgg_fer ensemble or its targets)
    "vgg_fer_distill": ["model.distill_from=[emo/weights/vgg_s.ckpt]"],
    "vgg_s_distill": ["model.distill_from=[emo/weights/vgg_s.ckpt]"],
    "vgg_s_people": ["init_from=emo/weights/vgg_s.ckpt"],
    "vgg_s_ferplus": ["init_from=emo/weights/vgg_s.ckpt"],
}


@pytest.mark.slow
# The release recipes compose to these experiments plus a seed and shipped soft targets (whose
# fingerprint only FER-2013 matches): tests/test_release.py checks them against the checkpoints.
@pytest.mark.parametrize("name", [n for n in group_options("experiment") if not n.startswith("release/")])
def test_every_experiment_runs_one_fast_dev_run(name, ferplus_dir, tmp_path):
    cfg = compose([f"experiment={name}", f"data.data_dir={ferplus_dir}", "debug=fdr", *NEEDS.get(name, [])])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.model.compile = False  # the GPU recipes' torch.compile: minutes on a CPU, same graph
        cfg.callbacks.progress_bar = None
    assert not OmegaConf.missing_keys(cfg), OmegaConf.missing_keys(cfg)
    train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert list(saved["best"]) == [cfg.monitor]
    if cfg.test:
        assert saved["n"] == 28 and saved["labels"] == cfg.data.labels

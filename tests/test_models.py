"""Every registered network: output shape, finiteness, and a gradient for every parameter."""

from __future__ import annotations

import pytest
import torch

from emo.errors import EmoError
from emo.models import create_model, list_models

#: The GPU-sized nets at a sixteenth of their width or less: the same layers and connections (what
#: this test checks), a fraction of the time on a CPU.
NARROW = {
    "vgg_fer": {"widths": (8, 16, 32, 32), "hidden": (32, 32)},
    "resnet18_fer": {"widths": (8, 8, 16, 32)},
}


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("num_classes", [7, 5])
def test_forward_backward(name, num_classes):
    torch.manual_seed(0)
    net = create_model(name, in_chans=1, num_classes=num_classes, **NARROW.get(name, {}))
    x = torch.randn(4, 1, 48, 48)
    logits = net(x)
    assert logits.shape == (4, num_classes)
    assert torch.isfinite(logits).all()
    with torch.no_grad():  # in eval mode (no dropout) the two halves compose to forward
        net.eval()
        torch.testing.assert_close(net.forward_head(net.forward_features(x)), net(x))
        net.train()
    logits.square().mean().backward()  # squared: every logit, not only the mean, carries gradient
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_cnn3_is_the_reference_network():
    net = create_model("cnn3")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(128 * 6 * 6, 128), (128, 7)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 3
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 3
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 4


def test_unknown_model_lists_valid_names():
    with pytest.raises(EmoError, match="unknown model 'vgg99': choose one of .*cnn3"):
        create_model("vgg99")


@pytest.mark.parametrize(
    "name, millions", [("vgg_t", 0.29), ("vgg_s", 0.84), ("resnet_s", 1.23), ("vgg_m", 2.06)]
)
def test_cpu_nets_have_the_sizes_their_docs_state(name, millions):
    net = create_model(name)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == millions

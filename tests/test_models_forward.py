"""Every registered model: forward and backward on a tiny input, the interpretation contract
(Grad-CAM layer, activations as modules, not in place, each used once), memory-efficient mode."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from neurocnn import models
from neurocnn.models.densenet import DenseNet
from neurocnn.models.resnet import ResNet


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    # Two OpenMP threads on a busy 2-core machine spin against each other (10× slower here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Small but valid inputs; channel_dimension takes its slice count from the shape.
TINY = {
    "sequential_1": (9, 9, 9),
    "sequential_2": (9, 9, 9),
    "sequential_3": (27, 27, 27),
    "inception_1": (6, 6, 6),
    "inception_2": (6, 6, 6),
    "inception_resnet_1": (6, 6, 6),
    "inception_resnet_2": (6, 6, 6),
    "pif_cnn": (53, 53, 53),
    "pif_baseline": (98, 98, 98),
    "mrinet": (22, 22, 22),
    "alexnet_2d": (63, 63, 2),
    "vgg19_2d": (32, 32, 2),
    "channel_dimension": (29, 29, 3),
}
SMALL_OPTIONS = {
    "pif_baseline": {"widths": (2, 2, 2, 2, 2)},
    "pif_cnn": {"widths": (2, 2, 2, 4)},
}


def tiny_shape(name: str) -> tuple[int, int, int]:
    if name in TINY:
        return TINY[name]
    info = models.info(name)
    if info.family in ("densenet3d",):
        return (15, 29, 29)
    if info.family == "slices2d":
        return (29, 29, 2) if "densenet" in name else (16, 16, 2)
    return (16, 16, 16)


# Above this many parameters the CPU test backpropagates to the input only: weight gradients of
# 100M-parameter networks cost seconds even on tiny inputs; the meta-device test covers them.
BIG = 20_000_000


@pytest.mark.parametrize("name", models.available())
def test_forward_backward_on_a_tiny_input(name: str) -> None:
    torch.manual_seed(0)
    shape = tiny_shape(name)
    model = models.build(name, input_shape=shape, **SMALL_OPTIONS.get(name, {}))
    big = models.count_parameters(model) > BIG
    if big:
        model.requires_grad_(False)
    x = torch.randn(2, 1, *shape, requires_grad=big)
    logits = model(x)
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    if big:
        assert x.grad is not None and torch.isfinite(x.grad).all()
    else:
        dead = [n for n, p in model.named_parameters() if p.grad is None]
        assert not dead, f"parameters without gradient: {dead[:5]}"
    assert isinstance(model.get_submodule(model.gradcam_layer), nn.Module)


@pytest.mark.parametrize("name", models.available())
def test_every_parameter_gets_a_gradient_at_the_default_shape(name: str) -> None:
    # On the meta device: shapes only, so even 120M-parameter models at 121×145×121 are instant.
    with torch.device("meta"):
        model = models.build(name)
        x = torch.empty(2, 1, *models.info(name).default_input_shape)
        model(x).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, f"parameters without gradient: {dead[:5]}"


class _CountActivations(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.rstrip("_") in ("relu", "elu", "clamp_min"):
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", models.available())
def test_activations_are_modules_used_once_and_not_in_place(name: str) -> None:
    # On the meta device: the dispatch mode and the hooks see every call, nothing is computed.
    with torch.device("meta"):
        model = models.build(name).eval()
    acts = {n: m for n, m in model.named_modules() if isinstance(m, nn.ReLU | nn.ELU)}
    assert acts and not [n for n, m in acts.items() if m.inplace]
    used: Counter[str] = Counter()
    for n, m in acts.items():
        m.register_forward_hook(lambda _m, _i, _o, n=n: used.update([n]))
    with torch.no_grad(), _CountActivations() as counter:
        model(torch.empty(1, 1, *models.info(name).default_input_shape, device="meta"))
    assert set(used.values()) == {1}, "an activation module is used more than once"
    # every relu/elu computed in the forward pass comes from one of those modules
    assert sum(counter.calls.values()) == sum(used.values())
    assert not [k for k in counter.calls if k.endswith("_")], "in-place activation"


def _small(kind: str, memory_efficient: bool) -> nn.Module:
    if kind == "densenet":
        return DenseNet(
            name="densenet-small",
            dims=3,
            block_config=(2, 3),
            growth_rate=4,
            init_features=8,
            input_shape=(8, 16, 16),
            memory_efficient=memory_efficient,
        )
    return ResNet(
        name="resnet-small",
        dims=3,
        block="bottleneck",
        layers=(1, 2, 1, 1),
        input_shape=(8, 16, 16),
        memory_efficient=memory_efficient,
    )


@pytest.mark.parametrize("kind", ["densenet", "resnet"])
def test_memory_efficient_mode_gives_the_same_step(kind: str) -> None:
    torch.manual_seed(0)
    plain = _small(kind, memory_efficient=False)
    lean = _small(kind, memory_efficient=True)
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 8, 16, 16)
    for model in (plain, lean):
        model.train()
        model(x).square().sum().backward()
    for (n, a), b in zip(plain.named_parameters(), lean.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=n)
    # recomputation must not count the batch twice in the running statistics
    for (n, a), b in zip(plain.named_buffers(), lean.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


def test_fused_paths_match_the_plain_modules() -> None:
    # A global forward hook makes every BN-ReLU pair and 1× convolution run as plain modules.
    torch.manual_seed(0)
    for model in (_small("densenet", False), _small("resnet", False)):
        x = torch.randn(2, 1, 8, 16, 16)
        fused = model(x)
        fused.square().sum().backward()
        fused_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        handle = nn.modules.module.register_module_forward_hook(lambda _m, _i, _o: None)
        try:
            plain = model(x)
            plain.square().sum().backward()
        finally:
            handle.remove()
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
        for a, p in zip(fused_grads, model.parameters(), strict=True):
            torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)


def test_channels_last_is_a_layout_choice_only() -> None:
    torch.manual_seed(0)
    a = DenseNet(name="a", dims=3, block_config=(2, 2), growth_rate=4, init_features=8)
    b = DenseNet(name="b", dims=3, block_config=(2, 2), growth_rate=4, init_features=8, channels_last=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 8, 16, 16)
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mrinet", "sequential_2", "inception_resnet_1"])
def test_channels_last_plain_cnns_match_their_ncdhw_twins(name: str) -> None:
    """MriNet and S1's networks compute channels-last by default (faster on CPU); outputs,
    flattened features (logical C, D, H, W order) and gradients equal the NCDHW network's, and
    checkpoints move between the two layouts."""
    shape = (30, 34, 30) if name == "mrinet" else (21, 24, 21)
    torch.manual_seed(0)
    a = models.build(name, input_shape=shape).eval()
    b = models.build(name, input_shape=shape, channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    # a 3³ convolution over several channels (where the two layouts differ)
    conv = next(
        m for m in a.modules() if isinstance(m, nn.Conv3d) and m.in_channels > 1 and m.kernel_size[0] > 1
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()
    x = torch.randn(2, 1, *shape)
    torch.testing.assert_close(a.forward_features(x), b.forward_features(x), rtol=1e-4, atol=1e-5)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-5)
    ya[:, 1].sum().backward()
    yb[:, 1].sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-3, atol=1e-5, msg=n)


def test_reset_head_replaces_the_last_layer() -> None:
    model = models.build("densenet121", input_shape=(15, 29, 29)).eval()
    model.reset_head(5)
    assert model(torch.randn(1, 1, 15, 29, 29)).shape == (1, 5)
    model.reset_head(None)
    assert model(torch.randn(1, 1, 15, 29, 29)).shape == (1, model.feature_dim)


def test_every_parameter_of_every_model_can_be_randomised():
    """The model-randomisation sanity check re-draws parameters through each module's
    reset_parameters(); a parameter none reaches (as the PIF layer's per-patch filters were)
    would keep its trained value in the 'randomised' model."""
    from neurocnn.interpret.sanity import _check_covered, randomised_copy

    for name in models.available():
        net = models.build(name, input_shape=tiny_shape(name), **SMALL_OPTIONS.get(name, {}))
        _check_covered(net)
        if name == "pif_cnn":
            rnd = randomised_copy(net)
            drawn = 0
            for (key, before), after in zip(net.named_parameters(), rnd.parameters(), strict=True):
                if "norm" in key or ".bn" in key:
                    continue  # BatchNorm resets to its constant start (1, 0)
                assert not torch.equal(before, after), key
                drawn += "pif.weights" in key or "pif.biases" in key
            assert drawn == 2  # the PIF layer's per-patch filters and biases

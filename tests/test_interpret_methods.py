"""Grad-CAM, guided backprop and the Captum methods: against hand computation and Captum itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret import (
    attribution_mode,
    grad_cam,
    guided_backprop,
    integrated_gradients,
    occlusion,
    predicted_classes,
)
from neurocnn.interpret.attribution import speed_copy
from neurocnn.models import build

SHAPE = (12, 14, 12)


class Tiny(nn.Module):
    """1×1×1 conv (2 maps, no bias) → ReLU → flatten → linear: Grad-CAM by hand is easy."""

    gradcam_layer = "conv"

    def __init__(self, shape: tuple[int, int, int] = (4, 5, 3)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2 * int(np.prod(shape)), 2)
        self.num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


def tiny_mrinet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = build("mrinet", input_shape=SHAPE, widths=(4, 8), dropout=0.5)
    # non-trivial BatchNorm statistics, so that folding them into the convolutions is tested
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


def test_grad_cam_equals_hand_computation_for_each_class() -> None:
    torch.manual_seed(1)
    net = Tiny()
    x = torch.randn(3, 1, 4, 5, 3)
    a = (net.conv.weight.detach().reshape(2)[None, :, None, None, None] * x).numpy()  # (3, 2, 4, 5, 3)
    u = net.fc.weight.detach().numpy().reshape(2, 2, 4, 5, 3)  # dy_c / dA_k[v] where A > 0
    for c in (0, 1):
        cam = grad_cam(net, x, c).numpy()
        relu_mask = a > 0  # the ReLU after the layer gates the gradient
        grads = u[c][None] * relu_mask
        alpha = grads.mean(axis=(2, 3, 4))  # all three spatial axes
        expected = np.maximum((alpha[:, :, None, None, None] * a).sum(1), 0)
        np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(grad_cam(net, x, 0).numpy(), grad_cam(net, x, 1).numpy())


def test_hirescam_equals_hand_computation_and_adds_up_to_the_score() -> None:
    torch.manual_seed(2)
    net = Tiny()
    x = torch.randn(2, 1, 4, 5, 3)
    a = np.maximum((net.conv.weight.detach().reshape(2)[None, :, None, None, None] * x).numpy(), 0)
    u = net.fc.weight.detach().numpy().reshape(2, 2, 4, 5, 3)
    cam = grad_cam(net, x, 1, layer="relu", variant="hirescam").numpy()
    np.testing.assert_allclose(cam, np.maximum((u[1][None] * a).sum(1), 0), rtol=1e-5, atol=1e-6)
    raw = grad_cam(net, x, 1, layer="relu", variant="hirescam", relu=False)
    with torch.no_grad():
        score = net(x)[:, 1] - net.fc.bias[1]
    torch.testing.assert_close(raw.sum((1, 2, 3)), score, rtol=1e-5, atol=1e-5)
    with pytest.raises(NeuroCNNError, match="variant"):
        grad_cam(net, x, variant="layercam")


def test_grad_cam_defaults_to_the_predicted_class_per_subject() -> None:
    net = tiny_mrinet()
    x = torch.randn(4, 1, *SHAPE)
    pred = predicted_classes(net, x)
    torch.testing.assert_close(grad_cam(net, x), grad_cam(net, x, pred))


def test_grad_cam_equals_captum_layer_gradcam_relu_and_trilinear() -> None:
    from captum.attr import LayerAttribution, LayerGradCam

    net = tiny_mrinet().eval()
    x = torch.randn(3, 1, *SHAPE)
    target = torch.tensor([0, 1, 1])
    layer = net.get_submodule(net.gradcam_layer)
    ref = LayerGradCam(net, layer).attribute(x, target=target, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, SHAPE, "trilinear")[:, 0].detach()
    exact = grad_cam(net, x, target, fuse=False, batch_size=2)
    torch.testing.assert_close(exact, ref, rtol=1e-5, atol=1e-7)
    fused = grad_cam(net, x, target)
    torch.testing.assert_close(fused, ref, rtol=1e-3, atol=1e-5 * float(ref.abs().max()))


def test_guided_backprop_equals_captum() -> None:
    from captum.attr import GuidedBackprop

    net = tiny_mrinet().eval()
    x = torch.randn(3, 1, *SHAPE)
    target = torch.tensor([1, 0, 1])
    with pytest.warns(UserWarning):  # Captum announces its own hooks
        ref = GuidedBackprop(net).attribute(x.clone(), target=target).clamp_min(0)[:, 0].detach()
    torch.testing.assert_close(guided_backprop(net, x, target, fuse=False), ref, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(
        guided_backprop(net, x, target), ref, rtol=1e-3, atol=1e-5 * float(ref.abs().max())
    )


def test_guided_backprop_keeps_channels_on_request() -> None:
    torch.manual_seed(0)
    net = build("mrinet", in_channels=2, input_shape=SHAPE, widths=(4, 8))
    x = torch.randn(2, 2, *SHAPE)
    kept = guided_backprop(net, x, channels="keep")
    assert kept.shape == (2, 2, *SHAPE)
    torch.testing.assert_close(kept.sum(1), guided_backprop(net, x))
    assert (kept >= 0).all()


def test_methods_leave_the_model_unchanged_and_compute_no_weight_gradients() -> None:
    net = tiny_mrinet()
    net.train()
    net.head.fc.weight.requires_grad_(False)  # a frozen parameter stays frozen
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 1, *SHAPE)
    grad_cam(net, x, fuse=False)
    guided_backprop(net, x, fuse=False)
    grad_cam(net, x)
    assert net.training
    assert [p.requires_grad for p in net.parameters()].count(False) == 1
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_attribution_mode_restores_flags_after_an_error() -> None:
    net = Tiny().train()
    with pytest.raises(RuntimeError), attribution_mode(net):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        raise RuntimeError("boom")
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_speed_copy_folds_batchnorm_exactly_enough() -> None:
    net = tiny_mrinet().eval()
    fast = speed_copy(net)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    x = torch.randn(2, 1, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)


def test_grad_cam_refuses_bad_layers_and_inputs() -> None:
    net = tiny_mrinet()
    with pytest.raises(NeuroCNNError, match="no layer"):
        grad_cam(net, torch.randn(1, 1, *SHAPE), layer="features.nope")
    with pytest.raises(NeuroCNNError, match="activations shaped"):
        grad_cam(net, torch.randn(1, 1, *SHAPE), layer="head.fc")
    with pytest.raises(NeuroCNNError, match="expected a batch"):
        grad_cam(net, torch.randn(*SHAPE))
    with pytest.raises(NeuroCNNError, match="class indices"):
        grad_cam(net, torch.randn(1, 1, *SHAPE), 5)


def test_guided_backprop_refuses_models_without_relu() -> None:
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.ELU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.randn(1, 1, 6, 6, 6))
    with pytest.raises(NeuroCNNError, match="no nn.ReLU"):
        guided_backprop(net, torch.randn(1, 1, 6, 6, 6))


def test_captum_occlusion_and_integrated_gradients_find_the_informative_block() -> None:
    class BlockScore(nn.Module):
        num_classes = 2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x[:, :, 2:6, 2:6, 2:6].mean((1, 2, 3, 4))
            return torch.stack([s, -s], 1)

    x = torch.zeros(1, 1, 10, 10, 10)
    x[:, :, 2:6, 2:6, 2:6] = 1.0
    occ = occlusion(BlockScore(), x, 0, window=2, stride=2)
    ig = integrated_gradients(BlockScore(), x, 0, steps=4)
    for m in (occ, ig):
        inside = m[0, 2:6, 2:6, 2:6].abs().mean()
        assert inside > 0 and float(m[0].abs().sum() - m[0, 2:6, 2:6, 2:6].abs().sum()) < 1e-6
    # integrated gradients is complete: attributions sum to f(x) - f(baseline)
    assert float(ig.sum()) == pytest.approx(1.0, rel=1e-4)
    assert F.relu(occ).shape == (1, 10, 10, 10)

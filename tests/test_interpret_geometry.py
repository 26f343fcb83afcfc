"""Grad-CAM's placement of layer maps on the input grid: traced receptive-field centres, checked
against the receptive fields that gradients show, and the plain stretch as the fallback."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurocnn.interpret.geometry import layer_geometry, place_on_input
from neurocnn.interpret.gradcam import grad_cam
from neurocnn.models import build


class _Residual(nn.Module):
    """A padded, strided stage with a 1³ strided shortcut, as in a ResNet."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2))
        self.main = nn.Sequential(nn.Conv3d(4, 4, 3, stride=2, padding=1), nn.ReLU())
        self.short = nn.Conv3d(4, 4, 1, stride=2)
        self.head = nn.Sequential(nn.Conv3d(4, 4, 5), nn.ReLU())
        self.fc = nn.LazyLinear(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.main(h) + self.short(h)
        return self.fc(self.head(h).flatten(1))


def _receptive_field_centre(net: nn.Module, layer: str, shape: tuple[int, ...], cell: tuple[int, ...]):
    """Centre of one cell's receptive field, from the support of its input gradient in a copy made
    linear with positive weights (max-pooling as average pooling), so that no path cancels."""
    probe = copy.deepcopy(net).double().eval()
    for name, module in list(probe.named_modules()):
        if isinstance(module, nn.MaxPool3d):
            parent = probe.get_submodule(name.rsplit(".", 1)[0]) if "." in name else probe
            setattr(parent, name.rsplit(".", 1)[-1], nn.AvgPool3d(module.kernel_size, module.stride))
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_().add_(0.01)
        for m in probe.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.zero_()
    x = torch.ones(1, 1, *shape, dtype=torch.float64, requires_grad=True)
    got: list[torch.Tensor] = []
    handle = probe.get_submodule(layer).register_forward_hook(lambda _m, _a, out: got.append(out))
    probe(x)
    handle.remove()
    got[0][(0, slice(None), *cell)].sum().backward()
    support = x.grad[0, 0] > 0
    centres = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = torch.nonzero(support.any(dim=other)).flatten()
        assert idx[0] > 0 and idx[-1] < shape[axis] - 1, "the receptive field must not touch the border"
        centres.append((idx[0] + idx[-1]).item() / 2)
    return tuple(centres)


@pytest.mark.parametrize(
    ("layer", "cell"),
    [("features.block1", (5, 9, 7)), ("features.block2", (3, 4, 6)), ("features.block3", (1, 3, 2))],
)
def test_mrinet_cells_sit_at_their_receptive_field_centres(layer, cell):
    shape = (58, 70, 58)
    net = build("mrinet", in_channels=1, num_classes=2, input_shape=shape).eval()
    geo = layer_geometry(net, net.get_submodule(layer), torch.zeros(1, 1, *shape))
    assert geo is not None
    traced = tuple(geo.offset[a] + geo.stride[a] * cell[a] for a in range(3))
    assert traced == _receptive_field_centre(net, layer, shape, cell)
    if layer == "features.block3":  # 3 unpadded conv-pool blocks: stride 8 from voxel 10.5
        assert geo.stride == (8.0,) * 3 and geo.offset == (10.5,) * 3


def test_padded_residual_stage_with_a_strided_shortcut():
    shape = (40, 44, 40)
    net = _Residual()
    net(torch.zeros(1, 1, *shape))  # materialise the lazy layer
    for layer, cell in (("main", (4, 5, 4)), ("head", (2, 3, 2))):
        geo = layer_geometry(net, net.get_submodule(layer), torch.zeros(1, 1, *shape))
        assert geo is not None
        traced = tuple(geo.offset[a] + geo.stride[a] * cell[a] for a in range(3))
        assert traced == _receptive_field_centre(net, layer, shape, cell)


def test_placement_puts_a_cell_at_its_centre_and_falls_back_to_the_stretch():
    shape = (58, 70, 58)
    net = build("mrinet", in_channels=1, num_classes=2, input_shape=shape).eval()
    geo = layer_geometry(net, net.get_submodule("features.block3"), torch.zeros(1, 1, *shape))
    cells = torch.zeros(1, 5, 7, 5)
    cells[0, 1, 5, 3] = 1.0
    placed = place_on_input(cells, shape, geo)
    # the centre is at voxel (18.5, 50.5, 34.5): the 2×2×2 voxels around it share the maximum
    peak = torch.nonzero(placed[0] == placed.max()).tolist()
    assert sorted(peak) == [[x, y, z] for x in (18, 19) for y in (50, 51) for z in (34, 35)]
    assert torch.allclose(placed.sum(), torch.tensor(8.0**3), rtol=0.02)  # one cell's worth of voxels
    # unknown geometry: exactly trilinear interpolation with align_corners=False
    maps = torch.rand(2, 5, 7, 5)
    plain = F.interpolate(maps[:, None], size=shape, mode="trilinear", align_corners=False)[:, 0]
    assert torch.allclose(place_on_input(maps, shape, None), plain, atol=1e-6)


def test_grad_cam_places_maps_by_geometry_and_keeps_its_layer_unfused():
    shape = (58, 70, 58)
    torch.manual_seed(0)
    net = build("mrinet", in_channels=1, num_classes=2, input_shape=shape).eval()
    for m in net.modules():  # BatchNorm statistics that differ from the identity
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 1, *shape)
    coarse = grad_cam(net, x, layer="features.block3", upsample=False)
    geo = layer_geometry(net, net.get_submodule("features.block3"), x)
    full = grad_cam(net, x, layer="features.block3")
    assert torch.allclose(full, place_on_input(coarse, shape, geo), atol=1e-5)
    # voxels 0..10 take cell 0's value: nothing is stretched over them
    assert torch.allclose(full[:, :11, 20, 20], full[:, 10:11, 20, 20].expand(-1, 11), atol=1e-6)
    # a convolution followed by BatchNorm: explained as the convolution's own output when fused
    fused = grad_cam(net, x, layer="features.block3.conv")
    plain = grad_cam(net, x, layer="features.block3.conv", fuse=False)
    assert torch.allclose(fused, plain, atol=1e-4 * float(plain.abs().max()))

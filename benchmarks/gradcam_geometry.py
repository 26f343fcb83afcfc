"""Where Grad-CAM's layer cells land on the input grid: traced receptive-field centres
(`neurocnn.interpret.geometry`) against the usual stretch (trilinear, align_corners=False), for
MriNet's three blocks at 58×70×58, and what each placement costs.

    .venv/bin/python benchmarks/gradcam_geometry.py
"""

from __future__ import annotations

import time

import torch

from neurocnn.interpret.geometry import layer_geometry, place_on_input, stretch_geometry
from neurocnn.interpret.gradcam import upsample_to
from neurocnn.models import build

SHAPE = (58, 70, 58)


def main() -> int:
    torch.set_num_threads(1)
    net = build("mrinet", in_channels=1, num_classes=2, input_shape=SHAPE).eval()
    x = torch.randn(1, 1, *SHAPE)
    print("| layer | cells | traced stride, first centre | stretch stride | largest centre shift (voxels) |")
    print("|---|---|---|---|---|")
    for layer in ("features.block1", "features.block2", "features.block3"):
        module = net.get_submodule(layer)
        geo = layer_geometry(net, module, x)
        assert geo is not None
        seen: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _a, out, seen=seen: seen.append(out))
        with torch.no_grad():
            net(x)
        handle.remove()
        cells = tuple(seen[0].shape[2:])
        plain = stretch_geometry(cells, SHAPE)
        shift = [float((geo.centres(a, n) - plain.centres(a, n)).abs().max()) for a, n in enumerate(cells)]
        print(
            f"| {layer} | {'×'.join(map(str, cells))} | {geo.stride[0]:g}, {geo.offset[0]:g} "
            f"| {' / '.join(f'{s:.2f}' for s in plain.stride)} | {' / '.join(f'{d:.1f}' for d in shift)} |"
        )
    maps = torch.rand(16, 5, 7, 5)
    geo = layer_geometry(net, net.get_submodule("features.block3"), x)
    rows = [
        ("stretch (F.interpolate)", lambda: upsample_to(maps, SHAPE)),
        ("traced placement", lambda: place_on_input(maps, SHAPE, geo)),
        (
            "tracing the geometry (once per call)",
            lambda: layer_geometry(net, net.get_submodule("features.block3"), x),
        ),
    ]
    print("\n| step (1 thread) | ms |\n|---|---:|")
    for name, step in rows:
        step()
        start = time.perf_counter()
        for _ in range(5):
            step()
        ms = (time.perf_counter() - start) / 5 * 1000
        per = "once" not in name
        print(f"| {name} | {ms / 16 if per else ms:.2f}{' per subject' if per else ''} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

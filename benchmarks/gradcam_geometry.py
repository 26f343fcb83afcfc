"""Where Grad-CAM's layer cells land on the input grid: traced receptive-field centres
(`neurocnn.interpret.geometry`) against the usual stretch (trilinear, align_corners=False), for
MriNet's three blocks at 58×70×58, and what each placement costs.

    .venv/bin/python benchmarks/gradcam_geometry.py
    .venv/bin/python benchmarks/gradcam_geometry.py --ab RUN COHORT [--layers L1,L2]

``--ab``: the same trained run explained twice (Grad-CAM and HiResCAM, out-of-fold, every test
subject), with the traced placement and with the stretch, scored against the planted regions of a
synthetic cohort (e.g. the demo's: ``neurocnn demo --out D`` then ``--ab D/runs/mrinet D/cohort``).
"""

from __future__ import annotations

import time

import torch

from neurocnn.interpret.geometry import layer_geometry, place_on_input, stretch_geometry
from neurocnn.interpret.gradcam import upsample_to
from neurocnn.models import build

SHAPE = (58, 70, 58)


def ab(run: str, cohort: str, layers: list[str | None]) -> None:
    """Planted-region ranks and enrichment with the traced placement and with the stretch."""
    from neurocnn.interpret import gradcam
    from neurocnn.interpret.pipeline import InterpretOptions, interpret_run

    traced = gradcam.layer_geometry
    print("| layer | method | placement | planted ranks (mean attribution, AAL2) | enrichment, all planted |")
    print("|---|---|---|---|---|")
    for layer in layers:
        options = InterpretOptions(
            methods=("gradcam", "hirescam"), ground_truth=cohort, masked_eval=False, layer=layer
        )
        for name, geometry in (("traced", traced), ("stretch", lambda *a, **k: None)):
            gradcam.layer_geometry = geometry  # type: ignore[assignment]
            try:
                out = f"/tmp/gradcam_geometry_{name}_{layer}"
                summary = interpret_run(run, out, options, progress=False, overwrite=True)
            finally:
                gradcam.layer_geometry = traced
            for method in options.methods:
                info = summary["methods"][method]
                ranks = ", ".join(f"{k} {v}" for k, v in info["planted_ranks_mean"].items() if v is not None)
                mass = next(r["enrichment"] for r in info["localisation"] if r["region"] == "all planted")
                print(f"| {layer or 'default'} | {method} | {name} | {ranks} | {mass:.2f}× |")


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ab", nargs=2, metavar=("RUN", "COHORT"))
    parser.add_argument("--layers", default="", help="comma-separated target layers (default: the model's)")
    args = parser.parse_args()
    if args.ab:
        ab(*args.ab, [name or None for name in args.layers.split(",")])
        return 0
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

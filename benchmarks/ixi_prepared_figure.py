"""Mid-slices of prepared subjects with the MNI template's outline drawn over them.

    python benchmarks/ixi_prepared_figure.py --cache benchmarks/_work/ixi_3mm \
        --out benchmarks/figures/ixi_prepared.png

Checks registration by eye: the red line is the edge of the ICBM152 2009 brain (nilearn) resampled
onto the prepared grid through the affines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from nilearn.datasets import load_mni152_brain_mask
from nilearn.image import resample_img

from neurocnn.data.cache import open_cache


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/_work/ixi_3mm"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/figures/ixi_prepared.png"))
    parser.add_argument("--n", type=int, default=6)
    args = parser.parse_args()
    cache = open_cache(args.cache)
    affine = cache.affine
    if affine is None:
        raise SystemExit("the cache has no common grid (not registered)")
    shape = cache.shape[2:]
    mask = resample_img(
        load_mni152_brain_mask(resolution=1),
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    outline = np.asarray(mask.dataobj) > 0
    data = cache.array()
    pick = np.linspace(0, cache.shape[0] - 1, args.n).astype(int)
    centre = [s // 2 for s in shape]
    fig, axes = plt.subplots(3, args.n, figsize=(2.2 * args.n, 7), facecolor="black")
    for col, i in enumerate(pick):
        vol = np.asarray(data[i, 0], dtype=np.float32)
        for row, axis in enumerate((0, 1, 2)):
            sl = [slice(None)] * 3
            sl[axis] = centre[axis]  # type: ignore[call-overload]
            img, edge = vol[tuple(sl)].T, outline[tuple(sl)].T.astype(float)
            ax = axes[row, col]
            ax.imshow(np.ma.masked_equal(img, 0), cmap="gray", origin="lower", vmin=-2.5, vmax=2.5)
            ax.contour(edge, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_axis_off()
        axes[0, col].set_title(cache.manifest["participant_id"][i], color="white", fontsize=8)
    fig.suptitle(
        f"{args.cache.name}: prepared mid-slices (sagittal, coronal, axial) with the ICBM152 brain outline",
        color="white",
        fontsize=10,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90, facecolor="black", bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

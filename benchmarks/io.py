"""Reading speed and memory of the prepared cache against reading the original NIfTI files.

One epoch over the prepared IXI cohort through `CachedDataset` + DataLoader, versus one epoch that
reads each original `.nii.gz` (and its brain mask), reorients and z-scores it, as a pipeline without
a cache must do every epoch. Then peak resident memory of a process iterating over the cache, for the
cohort and for a cohort four times larger (the same subjects tiled), to show it does not grow with N.

    python benchmarks/io.py --cache benchmarks/_work/ixi_3mm   # after `neurocnn prepare` (see RESULTS.md)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from neurocnn.data.cache import open_cache
from neurocnn.data.dataset import CachedDataset


class NiftiDataset(Dataset):  # type: ignore[type-arg]
    """The no-cache reference: read, reorient, mask and z-score the original files each time."""

    def __init__(self, files: list[dict[str, str]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        f = self.files[i]
        img = nib.as_closest_canonical(nib.load(f["t1"]))
        data = img.get_fdata(dtype=np.float32)
        if "mask" in f:
            brain = np.asanyarray(nib.as_closest_canonical(nib.load(f["mask"])).dataobj) > 0
        else:
            brain = data != 0
        values = data[brain]
        data = np.where(brain, (data - values.mean()) / values.std(), 0).astype(np.float32)
        return torch.from_numpy(data[None]), 0, i


def epoch_seconds(ds: Dataset, batch_size: int, workers: int) -> tuple[float, float]:  # type: ignore[type-arg]
    """Wall-clock and CPU seconds of one epoch (CPU time is robust to other load on the machine)."""
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, shuffle=True)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in loader:
        pass
    return time.perf_counter() - start, time.process_time() - cpu


def tiled_cache(cache: Path, factor: int, out: Path) -> Path:
    """A copy of the cache with every subject repeated ``factor`` times (a larger cohort)."""
    if (out / "cache.json").exists():
        return out
    src = open_cache(cache)
    out.mkdir(parents=True, exist_ok=True)
    arr = src.array()
    big = np.lib.format.open_memmap(
        out / "data.npy", mode="w+", dtype=arr.dtype, shape=(arr.shape[0] * factor, *arr.shape[1:])
    )
    for k in range(factor):
        big[k * arr.shape[0] : (k + 1) * arr.shape[0]] = arr
    big.flush()
    np.save(out / "affines.npy", np.tile(src.affines(), (factor, 1, 1)))
    manifest = src.manifest.loc[np.tile(np.arange(len(src.manifest)), factor)].reset_index(drop=True)
    manifest["index"] = np.arange(len(manifest))
    manifest.to_csv(out / "manifest.tsv", sep="\t", index=False)
    info = {**src.info, "shape": list(big.shape)}
    (out / "cache.json").write_text(json.dumps(info))
    return out


def child_peak(cache: str) -> None:
    torch.set_num_threads(1)
    ds = CachedDataset(cache)
    for _ in DataLoader(ds, batch_size=4, num_workers=0):
        pass
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    print(json.dumps({"n": len(ds), "peak_mb": hwm_kb / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/_work/ixi_3mm"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_peak(args.child)
        return
    # one intra-op thread, as in DataLoader worker processes: collating 4 MB batches with an OpenMP
    # team costs 30x more when the machine is busy (measured: 2.3 s vs 0.07 s per epoch)
    torch.set_num_threads(1)
    cache = open_cache(args.cache)
    files = cache.info["subject_files"]
    ref = NiftiDataset([{"t1": f["t1"], **({"mask": f["mask"]} if "mask" in f else {})} for f in files])
    ours = CachedDataset(cache)
    epoch_seconds(ours, args.batch_size, args.workers)  # warm the page cache once, as epoch 2+ would be
    runs = [epoch_seconds(ours, args.batch_size, args.workers) for _ in range(5)]
    t_cache, c_cache = min(r[0] for r in runs), min(r[1] for r in runs)
    t_nifti, c_nifti = epoch_seconds(ref, args.batch_size, args.workers)

    big = tiled_cache(args.cache, 4, args.cache.parent / (args.cache.name + "_x4"))
    peaks = []
    for c in (args.cache, big):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(c)], capture_output=True, text=True, check=True
        )
        peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))

    table = Table(
        title=f"One epoch over {len(ours)} subjects {tuple(cache.shape[1:])} "
        f"(batch {args.batch_size}, {args.workers} workers)"
    )
    for col in ("reader", "epoch wall s", "subjects/s", "wall speed-up", "epoch CPU s", "CPU speed-up"):
        table.add_column(col)
    table.add_row(
        "original .nii.gz + normalise",
        f"{t_nifti:.2f}",
        f"{len(ref) / t_nifti:.0f}",
        "1.0x",
        f"{c_nifti:.2f}",
        "1.0x",
    )
    table.add_row(
        "neurocnn cache (memmap)",
        f"{t_cache:.3f}",
        f"{len(ours) / t_cache:.0f}",
        f"{t_nifti / t_cache:.0f}x",
        f"{c_cache:.3f}",
        f"{c_nifti / c_cache:.0f}x",
    )
    mem = Table(title="Peak RSS of a process iterating over the cache")
    for col in ("subjects", "array MB", "peak RSS MB"):
        mem.add_column(col)
    item_mb = np.prod(cache.shape[1:]) * np.dtype(cache.info["dtype"]).itemsize / 2**20
    for p in peaks:
        mem.add_row(str(p["n"]), f"{p['n'] * item_mb:.0f}", f"{p['peak_mb']:.0f}")
    console = Console()
    console.print(table)
    console.print(mem)


if __name__ == "__main__":
    main()

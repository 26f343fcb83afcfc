"""Is a prepared cohort reproducible? Prepare its first subjects again and compare, bit for bit.

    .venv/bin/python benchmarks/prepare_repeat.py benchmarks/_work/ixi_3mm --subjects 4

Reads the cache's own preparation parameters and input files (``cache.json``), prepares the first
``--subjects`` subjects again into a temporary folder (one worker process) with the same
parameters, and prints, per subject, whether the arrays are identical and the largest absolute
difference. A cohort registered without a seed (``--registration-seed 0``, or a cache written before
the seed existed, which records none) differs on every run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from neurocnn.data.cache import open_cache
from neurocnn.data.cohort import read_cohort
from neurocnn.data.prepare import prepare_cohort
from neurocnn.data.preprocess import PrepareParams


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache", type=Path)
    p.add_argument("--subjects", type=int, default=4)
    args = p.parse_args()

    cache = open_cache(args.cache)
    info = cache.info
    # a cache written before the seed existed was registered with ANTs' clock seed
    params = PrepareParams(**{"registration_seed": None, **info["params"]})
    ids = list(cache.manifest["participant_id"][: args.subjects])
    files = info["subject_files"][: len(ids)]  # absolute paths of each subject's images and mask
    images = list(info["modalities"])
    labels = cache.manifest["label"]
    rows = [
        {"participant_id": pid, **f, "label": labels.iloc[i]}
        for i, (pid, f) in enumerate(zip(ids, files, strict=True))
    ]
    table = pd.DataFrame(rows)
    mask = "mask" if "mask" in table else None
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "participants.csv"
        table.to_csv(source, index=False)
        cohort = read_cohort(source, images=images, label="label", mask=mask, require_labels=False)
        again = prepare_cohort(cohort, Path(tmp) / "cache", params, jobs=1, progress=False).cache
        first, second = np.asarray(cache.array()[: len(ids)]), np.asarray(again.array())
    seed = params.registration_seed or "none (clock)" if params.registration else "no registration"
    print(f"{args.cache}: registration seed {seed}")
    print("| subject | identical | voxels that differ | max abs difference |")
    print("|---|---|---:|---:|")
    for i, pid in enumerate(ids):
        diff = np.abs(first[i].astype(np.float64) - second[i])
        same = "yes" if np.array_equal(first[i], second[i]) else "no"
        print(f"| {pid} | {same} | {(diff > 0).mean():.1%} | {diff.max():.4g} |")


if __name__ == "__main__":
    main()

"""A torch Dataset over a prepared cache: memory-mapped, safe with DataLoader workers."""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from neurocnn.data.cache import PreparedCohort, open_cache


class CachedDataset(Dataset):  # type: ignore[type-arg]
    """Items ``(image, label, index)`` read from a cache without loading the cohort into RAM.

    Parameters
    ----------
    cache
        A cache folder or an opened `PreparedCohort`.
    indices
        Cache rows in this dataset (a split's training subjects, say); default all.
    split_modalities
        Return the image as a tuple of (1, X, Y, Z) tensors, one per modality, for multi-branch
        models, instead of one (C, X, Y, Z) tensor.
    transform
        Optional callable applied to the image tensor (per-sample augmentation).

    The memory map is opened lazily in each process and never pickled, so DataLoader workers
    (fork or spawn) each map the file themselves and share the page cache.
    """

    def __init__(
        self,
        cache: Path | str | PreparedCohort,
        indices: Sequence[int] | None = None,
        *,
        split_modalities: bool = False,
        transform: Any = None,
    ) -> None:
        self.cache = cache if isinstance(cache, PreparedCohort) else open_cache(cache)
        n = self.cache.shape[0]
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"indices outside the cache's {n} subjects")
        self.labels = self.cache.labels()
        self.split_modalities = split_modalities
        self.transform = transform
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[Any, int, int]:
        if self._array is None:
            self._array = self.cache.array()
        index = int(self.indices[item])
        # one copy out of the page cache, converted to float32 for the model
        image = torch.from_numpy(np.array(self._array[index], dtype=np.float32))
        self._release(index)
        if self.transform is not None:
            image = self.transform(image)
        out: Any = (
            tuple(image[c : c + 1] for c in range(image.shape[0])) if (self.split_modalities) else image
        )
        return out, int(self.labels[index]), index

    def _release(self, index: int) -> None:
        """Drop the item's pages from this process's mapping once copied.

        The kernel keeps them in its page cache (the next epoch still reads from RAM when it fits),
        but they no longer count in the process's resident memory, which therefore stays flat
        however large the cohort is.
        """
        mm = getattr(self._array, "_mmap", None)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        item = self._array[0].nbytes  # type: ignore[index]
        start = self._array.offset % mmap.ALLOCATIONGRANULARITY + index * item  # type: ignore[union-attr]
        aligned = start - start % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, aligned, start + item - aligned)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

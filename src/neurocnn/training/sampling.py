"""Randomness that is a function of (seed, epoch, subject), so that results do not depend on the
number of data-loader workers, on an interruption and resume, or on the number of DDP processes.

- `EpochSampler` shuffles the training set with a permutation drawn from ``(seed, epoch)`` and gives
  process ``rank`` the positions ``rank, rank + world, ...`` of it, as `DistributedSampler` does; so
  the global batch of a DDP run holds the same subjects as the batch of a single process.
- Every per-sample random choice (augmentation) is drawn from a generator seeded by
  ``(seed, epoch, cache index)``: `sample_seed`.
- The global torch generator (dropout) is re-seeded before every training step from
  ``(seed, epoch, step, rank)``, so that an epoch replayed after a resume is the epoch that was lost.

The epoch is read from the trainer (``current_epoch``) when an epoch's pass begins, not from
Lightning's ``set_epoch`` call, whose counter lags by one after a resume from a checkpoint written at
the end of an epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(*keys: int) -> int:
    """A 63-bit seed derived from integers (NumPy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(position, epoch)`` pairs: a shuffled (or ordered) pass over ``n`` items.

    The epoch travels with each item so that dataset transforms in worker processes know it
    without shared state. ``epoch_fn`` (the trainer's current epoch) gives the epoch when a pass
    begins; without it, the value of the last `set_epoch` call is used.
    With ``world > 1`` the permutation is padded by wrapping around to a multiple of ``world``.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        epoch_fn: Callable[[], int] | None = None,
    ) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch_fn = epoch_fn
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0x5A))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = -(-self.n // self.world) * self.world
        order += order[: total - self.n]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.epoch_fn is not None:
            self.epoch = int(self.epoch_fn())
        return iter([(p, self.epoch) for p in self._order()])

    def __len__(self) -> int:
        return -(-self.n // self.world)


class EpochDataset(Dataset):  # type: ignore[type-arg]
    """Wraps a `CachedDataset` for `EpochSampler` keys; applies a per-sample transform seeded by
    ``(seed, epoch, cache index)``. Items: ``(image, label, index)``."""

    def __init__(self, base: Any, transform: Any = None, seed: int = 0) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int, int]:
        position, epoch = key
        image, label, index = self.base[position]
        if self.transform is not None:
            image = self.transform(image, sample_seed(self.seed, epoch, index, 0xA5))
        return image, label, index

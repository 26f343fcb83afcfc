"""Augmentation and sampling: randomness is a function of (seed, epoch, subject), so it does not
depend on the batch, the number of processes or an interruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurocnn.errors import NeuroCNNError
from neurocnn.training.augment import SampleTransform, check_available, flip_and_shift
from neurocnn.training.config import AugmentConfig
from neurocnn.training.sampling import EpochSampler


def test_sampler_shards_are_the_single_process_batches():
    n, batch, world = 24, 8, 2
    single = [k for k, _ in EpochSampler(n, seed=3)]
    shards = [[k for k, _ in EpochSampler(n, seed=3, rank=r, world=world)] for r in range(world)]
    per = batch // world
    for step in range(n // batch):
        together = sorted(x for s in shards for x in s[step * per : (step + 1) * per])
        assert together == sorted(single[step * batch : (step + 1) * batch])
    assert sorted(single) == list(range(n))


def test_sampler_order_depends_on_seed_and_epoch_only():
    s = EpochSampler(20, seed=1)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert [k for k, _ in first] != [k for k, _ in second] and {e for _, e in second} == {1}
    epochs = iter([1])
    again = EpochSampler(20, seed=1, epoch_fn=lambda: next(epochs))
    assert list(again) == second
    assert [k for k, _ in EpochSampler(20, seed=1, shuffle=False)] == list(range(20))


def test_flip_and_shift_per_subject_whatever_the_batch():
    cfg = AugmentConfig(flip=True, shift=(-2, 3))
    x = torch.randn(6, 2, 10, 11, 9)
    idx = torch.arange(100, 106)
    whole = flip_and_shift(x, idx, epoch=4, seed=7, config=cfg)
    halves = torch.cat([flip_and_shift(x[:3], idx[:3], 4, 7, cfg), flip_and_shift(x[3:], idx[3:], 4, 7, cfg)])
    assert torch.equal(whole, halves)
    assert not torch.equal(whole, flip_and_shift(x, idx, 5, 7, cfg))
    assert torch.equal(flip_and_shift(x, idx, 4, 7, AugmentConfig()), x)


def test_shift_moves_voxels_and_fills_zeros():
    cfg = AugmentConfig(shift=(2, 2))
    x = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(1, 1, 5, 6, 7) + 1
    y = flip_and_shift(x, torch.tensor([0]), 0, 0, cfg)
    assert torch.equal(y[0, 0, 2:, 2:, 2:], x[0, 0, :-2, :-2, :-2])
    assert (y[0, 0, :2] == 0).all() and (y[0, 0, :, :2] == 0).all()


def test_flip_is_sagittal():
    cfg = AugmentConfig(flip=True)
    x = torch.randn(64, 1, 4, 3, 2)
    y = flip_and_shift(x, torch.arange(64), 0, 0, cfg)
    flipped = [bool(torch.equal(y[i], x[i].flip(1))) for i in range(64)]
    kept = [bool(torch.equal(y[i], x[i])) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


def test_monai_transforms_are_seeded_per_sample():
    pytest.importorskip("monai")
    cfg = AugmentConfig(rotate=10, zoom=(0.9, 1.1), artefacts=["bias", "noise", "gibbs"], probability=1.0)
    t = SampleTransform(cfg)
    image = torch.rand(2, 12, 14, 12)
    a, b, c = t(image, 11), t(image, 11), t(image, 12)
    assert a.shape == image.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(t))(image, 11), a)


def test_missing_library_is_named():
    try:
        import torchio  # noqa: F401

        pytest.skip("torchio is installed")
    except ImportError:
        with pytest.raises(NeuroCNNError, match="pip install torchio"):
            check_available(AugmentConfig(artefacts=["motion"]))


def test_flip_of_a_uniform_image_is_a_no_op_on_values():
    x = torch.ones(3, 1, 4, 4, 4)
    y = flip_and_shift(x, torch.arange(3), 0, 0, AugmentConfig(flip=True))
    assert np.allclose(y.numpy(), 1)

"""Transfer learning (S4): the backbone comes from a source run, the head is new, the backbone is
fine-tuned at a fraction of the head's learning rate or frozen."""

from __future__ import annotations

import logging

import pytest
import torch

from neurocnn.data.cache import open_cache
from neurocnn.errors import NeuroCNNError
from neurocnn.training import parse_config, run_cv
from neurocnn.training.module import build_network
from neurocnn.training.optim import parameter_groups
from neurocnn.training.transfer import load_backbone, load_state
from training_fixtures import TINY_MODEL, tiny_config, write_cache

HEAD = ["head.fc.weight", "head.fc.bias"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("transfer")
    cache = write_cache(root / "source_cache", 24, effect=3.0, prefix="src-")
    cfg = parse_config(tiny_config(cache, splits={"scheme": "independent"}, train={"max_epochs": 1}))
    run_cv(cfg, root / "source_run", progress=False)
    target = write_cache(root / "target_cache", 24, effect=3.0, classes=("a", "b", "c"), seed=5)
    return root / "source_run", target


def target_config(target, source_run, **transfer):
    return parse_config(
        tiny_config(
            target,
            splits={"folds": 2},
            train={"max_epochs": 1},
            transfer={"source": str(source_run), **transfer},
        )
    )


def test_backbone_loaded_and_head_reset(source):
    source_run, target = source
    cfg = target_config(target, source_run)
    cache = open_cache(target)
    net = build_network(cfg, cache.shape, 3)
    heads = load_backbone(net, cfg, cache.shape, 3)
    assert heads == HEAD
    src = load_state(source_run / "folds" / "r0_f0" / "best.ckpt")
    mine = net.state_dict()
    for key, value in src.items():
        if key in HEAD:
            assert mine[key].shape[0] == 3 and value.shape[0] == 2
        else:
            assert torch.equal(mine[key], value), key
    groups = parameter_groups(net, cfg, heads)
    assert [g["name"] for g in groups] == ["head", "backbone"]
    assert groups[1]["lr"] == pytest.approx(groups[0]["lr"] * 0.001)
    assert sum(p.numel() for p in groups[0]["params"]) == sum(mine[k].numel() for k in HEAD)


def test_frozen_backbone_stays_as_trained(source, tmp_path):
    source_run, target = source
    cfg = target_config(target, source_run, freeze_backbone=True)
    result = run_cv(cfg, tmp_path / "frozen", progress=False)
    assert not result.failed
    src = load_state(source_run / "folds" / "r0_f0" / "best.ckpt")
    for fold in ("r0_f0", "r0_f1"):
        tuned = load_state(tmp_path / "frozen" / "folds" / fold / "last.ckpt")
        for key, value in src.items():
            if key not in HEAD:  # weights and BatchNorm running statistics alike
                assert torch.equal(tuned[key], value), key
        assert tuned["head.fc.weight"].shape == (3, src["head.fc.weight"].shape[1])


def test_fine_tuned_backbone_moves_slowly(source, tmp_path):
    source_run, target = source
    result = run_cv(target_config(target, source_run), tmp_path / "tuned", progress=False)
    assert not result.failed
    src = load_state(source_run / "folds" / "r0_f0" / "best.ckpt")
    tuned = load_state(tmp_path / "tuned" / "folds" / "r0_f0" / "last.ckpt")
    conv = "features.block1.conv.weight"
    change = (tuned[conv] - src[conv]).abs().max()
    assert 0 < change < 1e-3  # lr 1e-2 × 0.001 for one epoch


def test_refuses_another_architecture_and_ambiguous_sources(source, tmp_path):
    source_run, target = source
    other = parse_config(
        tiny_config(
            target,
            model={**TINY_MODEL, "options": {"widths": [4, 6], "dropout": 0.0}},
            transfer={"source": str(source_run)},
        )
    )
    with pytest.raises(NeuroCNNError, match="same architecture"):
        run_cv(other, tmp_path / "x", progress=False)
    ckpt_only = other.with_overrides({"transfer.source": str(source_run / "folds/r0_f0/best.ckpt")})
    ckpt_only = ckpt_only.with_overrides({"transfer.source": str(tmp_path / "copy.ckpt")})
    (tmp_path / "copy.ckpt").write_bytes((source_run / "folds/r0_f0/best.ckpt").read_bytes())
    with pytest.raises(NeuroCNNError, match="does not fit"):
        run_cv(ckpt_only, tmp_path / "y", progress=False)
    cv_run = tmp_path / "cv_source"
    run_cv(
        parse_config(tiny_config(target, splits={"folds": 2}, train={"max_epochs": 1})),
        cv_run,
        progress=False,
    )
    with pytest.raises(NeuroCNNError, match="name one checkpoint"):
        run_cv(target_config(target, cv_run), tmp_path / "z", progress=False)


def test_a_source_trained_on_the_target_cohort_is_refused(source, tmp_path):
    """S4-style transfer pre-trains on another cohort: a source run whose training subjects are in
    the target cohort has seen the target's test subjects, and is refused before training."""
    source_run, _ = source
    # the source's own cohort again (its participants and image files)
    same = write_cache(tmp_path / "same", 24, effect=3.0, prefix="src-")
    for src in (source_run, source_run / "folds/r0_f0/best.ckpt"):
        out = tmp_path / f"out_{src.name}"
        with pytest.raises(
            NeuroCNNError, match=r"trained on image files of 24 subject\(s\) of the target.*src-000"
        ):
            run_cv(target_config(same, src), out, progress=False)
        assert not out.exists()


def test_a_bare_checkpoint_source_warns_that_the_overlap_cannot_be_checked(source, tmp_path):
    from neurocnn.training.transfer import check_source_cohort

    source_run, target = source
    bare = tmp_path / "bare.ckpt"
    bare.write_bytes((source_run / "folds/r0_f0/best.ckpt").read_bytes())
    with pytest.warns(UserWarning, match="cannot be checked"):
        check_source_cohort(target_config(target, bare), open_cache(target))
    check_source_cohort(target_config(target, source_run), open_cache(target))  # another cohort: fine


def test_shared_participant_ids_with_other_files_only_warn(source, tmp_path):
    """Two BIDS cohorts both have a sub-01: same ids, other image files, is not proof of overlap."""
    import json

    from neurocnn.training.transfer import check_source_cohort

    source_run, _ = source
    other = write_cache(tmp_path / "other", 24, effect=3.0, prefix="src-")
    info = json.loads((other / "cache.json").read_text())
    for record in info["inputs"].values():
        record["sha256"] = "another-" + record["sha256"]
    (other / "cache.json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match=r"24 participant id\(s\) that the target cohort .* also has"):
        check_source_cohort(target_config(other, source_run), open_cache(other))

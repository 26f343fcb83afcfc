"""The cache folder swap: a finished folder replaces an earlier one only once it is in place."""

from __future__ import annotations

import pytest


def test_swap_folder_puts_the_earlier_folder_back_when_the_new_one_cannot_move_in(tmp_path):
    from neurocnn.data.cache import swap_folder

    final = tmp_path / "final"
    final.mkdir()
    (final / "kept.txt").write_text("earlier")
    with pytest.raises(OSError):
        swap_folder(tmp_path / "never_written", final)  # the new folder is not there
    assert (final / "kept.txt").read_text() == "earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    new = tmp_path / "new"
    new.mkdir()
    (new / "result.txt").write_text("new")
    swap_folder(new, final)
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    assert (final / "result.txt").read_text() == "new" and not (final / "kept.txt").exists()

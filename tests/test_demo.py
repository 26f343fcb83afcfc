"""`neurocnn demo --quick` runs end to end, reuses its work, and refuses a foreign folder."""

from __future__ import annotations

from neurocnn.cli import main
from neurocnn.data.cache import open_cache
from neurocnn.data.splits import load_splits


def test_demo_quick_runs_and_reuses(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--subjects", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ran: synthetic cohort: 20 subjects" in text and "not yet built" in text
    cache = open_cache(out / "cache")
    assert cache.shape[:2] == (20, 3) and cache.modalities == ["gm", "wm", "fa"]
    splits = load_splits(out / "run" / "splits.tsv")
    assert splits["fold"].nunique() == 5
    assert main(["demo", "--quick", "--subjects", "20", "--out", str(out)]) == 0
    assert "(reused)" in capsys.readouterr().out


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("do not touch")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "not a neurocnn demo folder" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "do not touch"

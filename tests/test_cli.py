"""The command line: help with examples, one-line errors with exit code 2, no traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from neurocnn.cli import COMMANDS, build_parser, main
from neurocnn.errors import NeuroCNNError


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_every_command_help_has_an_example():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert "Example:" in (p.epilog or ""), name
        assert f"neurocnn {name}" in p.epilog, name


def test_user_error_is_one_line_exit_2_no_traceback(make_cohort):
    table = make_cohort(4)
    (table.parent / "gm/sub-001_gm.nii.gz").unlink()
    cmd = [
        sys.executable,
        "-m",
        "neurocnn.cli",
        "cohort",
        str(table),
        "--images",
        "gm,wm",
        "--label",
        "diagnosis",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("neurocnn cohort: error:")
    assert "sub-001 [gm]" in done.stderr and "file not found" in done.stderr
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True)
    assert "Traceback" in debug.stderr and debug.returncode != 0


def test_unknown_column_from_the_cli(make_cohort, capsys):
    table = make_cohort(2)
    assert main(["cohort", str(table), "--images", "t1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown column(s) 't1'" in err


def test_cohort_prepare_splits_end_to_end(make_cohort, tmp_path, capsys):
    table = make_cohort(10)
    args = [str(table), "--images", "gm,wm", "--mask", "mask", "--label", "diagnosis"]
    assert main(["cohort", *args, "--folds", "5"]) == 0
    assert "10 subjects" in capsys.readouterr().out
    out = tmp_path / "cache"
    prep = ["prepare", *args, "--out", str(out), "--voxel-size", "5", "--shape", "10x12x10", "--jobs", "1"]
    assert main(prep) == 0
    assert "prepared 10 subject(s)" in capsys.readouterr().out
    assert main(prep) == 0
    assert "up to date" in capsys.readouterr().out
    splits = tmp_path / "run" / "splits.tsv"
    assert main(["splits", str(out), "--folds", "5", "--out", str(splits)]) == 0
    assert "5 split(s)" in capsys.readouterr().out and splits.exists()
    assert main(["splits", str(out), "--folds", "5", "--seed", "9", "--out", str(splits)]) == 2
    assert "already holds different splits" in capsys.readouterr().err


def test_bad_numbers_in_arguments_are_one_line_errors(make_cohort, tmp_path, capsys):
    table = make_cohort(6)
    args = [str(table), "--images", "gm", "--label", "diagnosis", "--voxel-size", "5", "--jobs", "1"]
    out = tmp_path / "cache"
    # percentiles in the wrong order: pydantic's check, reported as one line, nothing written
    assert main(["prepare", *args, "--clip", "99,1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "clip_percentiles" in err and "low < high" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as stop:  # argparse: not two numbers
        main(["prepare", *args, "--clip", "99", "--out", str(out)])
    assert stop.value.code == 2 and "expected 2 comma-separated numbers" in capsys.readouterr().err
    assert main(["prepare", *args, "--clip", "none", "--shape", "10x12x10", "--out", str(out)]) == 0
    capsys.readouterr()
    splits = tmp_path / "splits.tsv"
    with pytest.raises(SystemExit):
        main(["splits", str(out), "--holdout", "0.5,0.5", "--out", str(splits)])
    assert "expected 3 comma-separated numbers" in capsys.readouterr().err
    assert main(["splits", str(out), "--holdout", "1,0,0", "--out", str(splits)]) == 2
    assert "test fractions must be above 0" in capsys.readouterr().err
    assert not splits.exists()


def test_prepare_refuses_to_replace_a_cache_of_other_settings_unless_told(make_cohort, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    table = make_cohort(4, modalities=("gm",), mask=False)
    out = tmp_path / "cache"
    prep = ["prepare", str(table), "--images", "gm", "--label", "diagnosis", "--out", str(out), "--jobs", "1"]
    assert main(prep) == 0
    capsys.readouterr()
    before = (out / "cache.json").read_text()
    assert main([*prep, "--normalise", "minmax"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "normalise 'zscore' there, 'minmax' now" in err and "--overwrite" in err
    assert (out / "cache.json").read_text() == before
    assert main(prep) == 0 and "up to date" in capsys.readouterr().out
    # an updated scan of the same table is prepared again, and said
    scan = table.parent / "gm/sub-002_gm.nii.gz"
    img = nib.load(str(scan))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 2, img.affine), str(scan))
    assert main(prep) == 0
    captured = capsys.readouterr()
    assert "prepared 4 subject(s)" in captured.out and f"1 input file(s) changed since {out}" in captured.err
    assert main([*prep, "--normalise", "minmax", "--overwrite"]) == 0
    assert '"minmax"' in (out / "cache.json").read_text()


def test_help_shows_defaults_and_bad_settings_name_the_option(tmp_path, capsys):
    from neurocnn.commands import cv

    with pytest.raises(SystemExit):
        main(["cohort", "--help"])
    assert "(default t1" in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    cv.register(parser.add_subparsers())
    for argv, said in [
        (["--folds", "1"], "--folds must be at least 2, got 1"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    ]:
        args = parser.parse_args(["cv", str(tmp_path), "--model", "mrinet", "--out", str(tmp_path), *argv])
        with pytest.raises(NeuroCNNError) as info:
            cv.build_config(args)
        assert str(info.value) == said
    # a bad value of a --config file is still named by its field
    config = tmp_path / "c.yaml"
    config.write_text(f"cache: {tmp_path}\nmodel: {{name: mrinet}}\nsplits: {{folds: 1}}\n")
    args = parser.parse_args(["cv", "--config", str(config), "--out", str(tmp_path)])
    with pytest.raises(NeuroCNNError, match="splits.folds"):
        cv.build_config(args)
    assert main(["synth", str(tmp_path / "syn"), "--subjects", "1"]) == 2
    assert capsys.readouterr().err == "neurocnn synth: error: --subjects must be at least 4, got 1\n"
    assert not (tmp_path / "syn").exists()


def test_a_continuous_label_column_is_questioned(make_cohort, capsys):
    table = make_cohort(12, modalities=("gm",), mask=False)
    assert main(["cohort", str(table), "--images", "gm", "--label", "age"]) == 0
    err = capsys.readouterr().err
    assert "label 'age' has 12 classes (numbers, e.g. 40, 41, 42): is this a continuous column?" in err
    assert main(["cohort", str(table), "--images", "gm", "--label", "participant_id"]) == 0
    assert "is this a continuous column?" in capsys.readouterr().err
    assert main(["cohort", str(table), "--images", "gm", "--label", "diagnosis"]) == 0
    assert "warning" not in capsys.readouterr().err

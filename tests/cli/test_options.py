"""Settings live once: the options of ``lensscan train/score/cutout/inject`` and of the job scripts
are generated from the config dataclasses, and every value given on the command line reaches the
config the library is called with."""

from __future__ import annotations

import argparse
import pathlib
import types
from dataclasses import fields
from importlib.util import module_from_spec, spec_from_file_location
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from lensscan.cli import main, parser, scoring
from lensscan.cli.options import from_args, options_of, values
from lensscan.config import CutoutConfig, InjectConfig, ScoreConfig, TrainConfig
from lensscan.train.recipes import ENSEMBLE_SCHEDULE
from lensscan.train.robustness import MATRIX_SCHEDULE

JOBS = pathlib.Path(__file__).resolve().parents[2] / "jobs"

#: Each command, its config and the arguments it needs (its required settings).
COMMANDS = {
    "train": (TrainConfig, ["D", "--out", "O"], {"data": "D", "out": "O"}),
    "score": (ScoreConfig, ["IN", "OUT"], {"input": "IN", "output": "OUT"}),
    "cutout": (CutoutConfig, ["CAT", "IMG_{band}", "--out", "O"],
               {"catalog": "CAT", "images": "IMG_{band}", "out": "O"}),
    "inject": (InjectConfig, ["S", "--out", "O", "--lenses", "3", "--negatives", "4"],
               {"survey": "S", "out": "O", "lenses": 3, "negatives": 4}),
}

#: ``lensscan train``'s options before they were generated (every one must stay).
TRAIN_FLAGS = ["--out", "--val", "--arch", "--name", "--epochs", "--steps-per-epoch",
               "--batch-size", "--lr", "--lr-batch", "--loss", "--seed", "--workers", "--gpu",
               "--storage", "--max-rows", "--patience", "--init", "--labels", "--grade-c",
               "--keep-labels", "--precision", "--exclude"]


def _job(name: str):
    spec = spec_from_file_location(name, JOBS / f"{name}.py")
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _command(cmd: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[cmd]


def _action(p: argparse.ArgumentParser, dest: str) -> argparse.Action:
    found = [a for a in p._actions if a.dest == dest]
    assert len(found) == 1, f"{dest} is not one option of {p.prog}"
    return found[0]


def _other_value(cls: type, name: str, action: argparse.Action) -> tuple[list[str], Any]:
    """Arguments that set the field ``name`` to a value other than its default, and that value."""
    f = next(f for f in fields(cls) if f.name == name)
    hint = get_type_hints(cls)[name]
    kind = hint
    if isinstance(hint, types.UnionType):  # X | None
        kind = next(a for a in get_args(hint) if a is not type(None))
    flag = action.option_strings[:1]
    if kind is bool:
        return flag, not f.default
    if action.choices:
        choice = next(c for c in action.choices if c != f.default)
        return [*flag, choice], choice
    if get_origin(kind) is tuple:
        return [*flag, "0.7", "2.5"], (0.7, 2.5)
    if get_origin(kind) is dict:
        return [*flag, "a=1", *flag, "b= x "], {"a": 1, "b": "x"}
    if get_origin(kind) is list:
        item = get_args(kind)[0]
        if f.metadata.get("per_band"):
            return [*flag, "1,2,3"], [item(v) for v in "123"]
        return [*flag, "a", *flag, "b"], ["a", "b"]
    text = {int: "7", float: "0.25", str: "elsewhere"}[kind]
    floor = max(f.metadata.get("low", 0), f.metadata.get("above", 0))
    if kind is float and floor >= 0.25:  # a bounded option (Moffat's beta > 1): inside it
        text = str(floor + 1.75)
    return [*flag, text], kind(text)


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_defaults_are_the_configs(cmd):
    """Nothing given: the command's config is the dataclass's defaults."""
    cls, argv, required = COMMANDS[cmd]
    assert from_args(cls, _command(cmd).parse_args(argv)) == cls(**required)


@pytest.mark.parametrize("cmd,name", [(cmd, f.name) for cmd in sorted(COMMANDS)
                                      for f in options_of(COMMANDS[cmd][0])
                                      if f.name not in COMMANDS[cmd][2]])
def test_every_option_reaches_the_config(cmd, name):
    cls, argv, required = COMMANDS[cmd]
    p = _command(cmd)
    extra, expected = _other_value(cls, name, _action(p, name))
    cfg = from_args(cls, p.parse_args([*argv, *extra]))
    assert getattr(cfg, name) == expected != getattr(cls(**required), name)


@pytest.mark.parametrize("name", [f.name for f in fields(ScoreConfig)])
def test_every_score_setting_is_an_option_of_lensscan_score_and_the_job(name):
    """A field added to ScoreConfig is an option of both, and reaches the config both score with
    (the job runs lensscan score's own handler)."""
    job = _job("score_survey")
    assert job.score is scoring.score and _command("score").get_default("fn") is scoring.score
    cli, jp = _command("score"), job.parser()
    if name in ("input", "output"):
        assert _action(cli, name).option_strings == []  # lensscan score IN OUT
        assert _action(jp, name).option_strings == [f"--{name}"] and _action(jp, name).required
        return
    for p, argv in ((cli, ["IN", "OUT"]), (jp, ["--input", "IN", "--output", "OUT"])):
        extra, expected = _other_value(ScoreConfig, name, _action(p, name))
        cfg = from_args(ScoreConfig, p.parse_args([*argv, *extra]))
        assert (cfg.input, cfg.output) == ("IN", "OUT")
        assert getattr(cfg, name) == expected != getattr(ScoreConfig("IN", "OUT"), name)


def test_train_keeps_every_option_it_had():
    p = _command("train")
    flags = {s for a in p._actions for s in a.option_strings}
    assert set(TRAIN_FLAGS) <= flags
    assert _action(p, "data").option_strings == []  # positional DATA
    every = {f.name for f in fields(TrainConfig)}
    assert {f.name for f in options_of(TrainConfig)} == every - {"arch_kwargs", "preprocessing"}


def test_augment_settings_from_the_command_line(tmp_path, capsys):
    """``--augment NAME=VALUE`` trains the recipe's resnet_s2 from the command line; a setting
    Augment does not have, or a value it cannot take, is one line before anything starts."""
    from lensscan.data.augment import Augment
    from lensscan.train.recipes import DEFAULT_MEMBERS
    from lensscan.train.trainer import complete, run_name

    argv = ["D", "--out", "O", "--augment", "noise_jitter=1", "--augment", "psf_jitter=0.8",
            "--augment", "d4=False"]
    cfg = from_args(TrainConfig, _command("train").parse_args(argv))
    assert cfg.augment == {"noise_jitter": 1, "psf_jitter": 0.8, "d4": False}
    done = complete(cfg).augment
    assert done == Augment(noise_jitter=1.0, psf_jitter=0.8, d4=False).to_dict()
    assert isinstance(done["noise_jitter"], float)
    assert str(Augment.from_dict({"psf_jitter": -0.0}).psf_jitter) == "0.0"  # one run name
    # the same member as the Python API's recipe: the same run, so either form resumes it
    s2 = {k: v for k, v in DEFAULT_MEMBERS["resnet_s2"].items() if k != "augment"}
    api = TrainConfig("D", "O", **DEFAULT_MEMBERS["resnet_s2"])
    cli = from_args(TrainConfig, _command("train").parse_args(
        ["D", "--out", "O", "--arch", s2["arch"], "--seed", str(s2["seed"]), "--loss", s2["loss"],
         "--augment", "noise_jitter=1.0", "--augment", "psf_jitter=0.8"]))
    assert run_name(complete(cli)) == run_name(complete(api))
    out = str(tmp_path / "o")
    for bad, said in ((["noise_jitter"], "--augment 'noise_jitter': give NAME=VALUE"),
                      (["jitter=1"], "augment: no setting 'jitter' (settings: d4, noise_jitter"),
                      (["d4=yes"], "augment: d4 is true or false, not 'yes'"),
                      (["psf_jitter=-0.5"], "augment: psf_jitter is a finite number >= 0"),
                      (["flux_jitter=nan"], "augment: flux_jitter is a finite number >= 0"),
                      (["noise_jitter=" + "9" * 400], "augment: noise_jitter is a finite number"),
                      (["noise_jitter=1e400"], "noise_jitter is a finite number >= 0, not '1e400'"),
                      (["flux_jitter=1"], "augment: flux_jitter is under 1"),
                      (["psf_jitter=1", "--augment", "psf_jitter=2"],
                       "--augment: psf_jitter is given twice")):
        assert main(["train", str(tmp_path), "--out", out, "--augment", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "o").exists()


def test_threshold_and_top_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        _command("score").parse_args(["IN", "OUT", "--threshold", "0.5", "--top", "3"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_malformed_band_list_is_one_line(capsys, tmp_path):
    assert main(["cutout", "c.csv", "i_{band}.fits", "--out", str(tmp_path / "o"),
                 "--bands", "g,r"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lensscan cutout: error: --bands: give three comma-separated bands, not 'g,r'"]
    assert main(["inject", "s", "--out", str(tmp_path / "o"), "--lenses", "1", "--negatives",
                 "1", "--gain", "1,x,3"]) == 2
    assert "--gain: 'x' is not a number" in capsys.readouterr().err
    # each value of a per-band option is held to the option's bounds, and bands are distinct
    assert main(["cutout", "c.csv", "i_{band}.fits", "--out", str(tmp_path / "o"),
                 "--psf-fwhm", "0.7,inf,0.6"]) == 2
    assert "--psf-fwhm: must be a finite number, not inf" in capsys.readouterr().err
    assert main(["cutout", "c.csv", "i_{band}.fits", "--out", str(tmp_path / "o"),
                 "--band-names", "G,R,R"]) == 2
    assert "--band-names G,R,R: each band once" in capsys.readouterr().err


def test_score_job_refuses_in_one_line_as_lensscan_score(tmp_path, capsys):
    job = _job("score_survey")
    missing = str(tmp_path / "missing")
    assert job.main(["--input", missing, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lensscan score: error:")
    assert "no such file or folder" in err[0]


def test_the_ensemble_job_gives_every_member_its_schedule_and_settings(capsys):
    ens = _job("train_ensemble")
    assert ENSEMBLE_SCHEDULE == {"epochs": 8, "steps_per_epoch": 200}  # as documented
    common = values(TrainConfig, ens.parse(["--train", "T", "--val", "V", "--out", "O"]),
                    ens.MEMBER_OPTIONS)
    plain = TrainConfig("T", "O")
    assert common == {**{n: getattr(plain, n) for n in ens.MEMBER_OPTIONS if n != "labels"},
                      **ENSEMBLE_SCHEDULE}
    a = ens.parse(["--train", "T", "--labels", "g.csv", "--out", "O", "--epochs", "2", "--gpu"])
    common = values(TrainConfig, a, ens.MEMBER_OPTIONS)
    assert (common["labels"], common["epochs"], common["gpu"]) == (["g.csv"], 2, True)
    with pytest.raises(SystemExit):
        ens.parse(["--train", "T", "--out", "O"])
    assert "--val is required without --labels" in capsys.readouterr().err


def test_the_matrix_job_gives_every_member_its_schedule():
    rob = _job("robustness")
    a = rob.parse(["--train", "T", "--val", "V", "--tests", "X", "--out", "O"])
    common = values(TrainConfig, a, rob.MEMBER_OPTIONS)
    assert common == {**MATRIX_SCHEDULE, "precision": "auto"}  # no --init: none
    a = rob.parse(["--train", "T", "--val", "V", "--tests", "X", "--out", "O", "--init", "M",
                   "--lr", "3e-4"])
    assert values(TrainConfig, a, rob.MEMBER_OPTIONS) == {**MATRIX_SCHEDULE, "lr": 3e-4,
                                                               "precision": "auto", "init": "M"}


def test_the_matrix_job_refuses_a_misspelled_choice_and_empty_test_sets(capsys):
    """Found by review: a misspelled --choices was dropped silently (the job ran the reference
    only, printed an empty table and exited 0); --test-lenses 0 failed after hours of training."""
    job = _job("robustness")
    base = ["--train", "t", "--val", "v", "--tests", "x", "--out", "o"]
    for extra, said in ((["--choices", "neighbors"], "invalid choice: 'neighbors'"),
                        (["--test-lenses", "0"], "--test-lenses: must be 1 or more, not 0"),
                        (["--test-seed", "-1"], "--test-seed: must be 0 or more, not -1")):
        with pytest.raises(SystemExit):
            job.parse([*base, *extra])
        assert said in capsys.readouterr().err
    assert job.parse([*base, "--choices", "neighbours", "psf"]).choices == ["neighbours", "psf"]


def test_the_matrix_job_passes_a_background_jitter_to_every_member():
    job = _job("robustness")
    base = ["--train", "t", "--val", "v", "--tests", "x", "--out", "o"]
    assert job.parse(base).background_jitter is None  # Augment's own default
    assert job.parse([*base, "--background-jitter", "1"]).background_jitter == 1.0
    with pytest.raises(SystemExit):
        job.parse([*base, "--background-jitter", "-1"])

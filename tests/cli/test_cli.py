"""The real command line, end to end: simulate -> import-npy, plain `python jobs/...`, demo."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from support import make_batch

from lensscan.cli import main
from lensscan.io.parquet import write_parquet

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_simulate_npy_then_import(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "npy"), "--lenses", "3", "--nonlenses", "5",
                 "--format", "npy", "--seed", "2", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["import-npy", str(tmp_path / "npy"), str(tmp_path / "pq")]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["files"] == 8


def test_simulate_presets(tmp_path, capsys):
    """`--preset broad` (the training prior) widens HSC Wide's seeing and draws every rendering
    family; the default is HSC Wide with one family per choice."""
    seeing = {}
    for name in ("hsc", "broad"):
        assert main(["simulate", str(tmp_path / name), "--lenses", "2", "--nonlenses", "28",
                     "--seed", "5", "--workers", "1", "--preset", name]) == 0
        seeing[name] = pq.read_table(str(tmp_path / name), columns=["seeing_i", "psf_family"])
    capsys.readouterr()
    hsc, broad = (np.asarray(seeing[k].column(0)) for k in ("hsc", "broad"))
    assert len(hsc) == len(broad) == 30
    assert hsc.min() >= 0.5 and hsc.max() <= 0.95
    assert broad.min() >= 0.45 and broad.max() <= 1.2 and broad.max() > 0.95
    assert set(seeing["hsc"].column(1).to_pylist()) == {"moffat"}
    assert len(set(seeing["broad"].column(1).to_pylist())) > 1


def test_simulate_theta_e_range(tmp_path, capsys):
    """`--theta-e LO,HI` draws every Einstein radius in that range (no small-separation tail) and
    sizes the non-lenses' deflectors alike; a malformed range is one line and exit 2."""
    out = str(tmp_path / "big")
    assert main(["simulate", out, "--lenses", "12", "--nonlenses", "12", "--seed", "3",
                 "--workers", "1", "--preset", "broad", "--theta-e", "1.4,3.0"]) == 0
    capsys.readouterr()
    t = pq.read_table(out, columns=["kind", "theta_e", "deflector_reff"]).to_pylist()
    theta = [r["theta_e"] for r in t if r["kind"] == "lens"]
    assert len(theta) == 12 and min(theta) >= 1.4 and max(theta) <= 3.0
    paired = [r["deflector_reff"] for r in t if r["kind"] == "paired"]
    assert paired and set(paired) <= {r["deflector_reff"] for r in t if r["kind"] == "lens"}
    for bad in ("3,1", "1.4", "a,b"):
        assert main(["simulate", str(tmp_path / "bad"), "--lenses", "1", "--nonlenses", "1",
                     "--theta-e", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--theta-e" in err[0], err


def test_simulate_refuses_a_folder_holding_a_survey(tmp_path, capsys):
    """A new survey written over an old one left the old one's extra shards behind: refused,
    or the old shards removed first with --overwrite."""
    out = str(tmp_path / "s")
    base = ["simulate", out, "--lenses", "1", "--seed", "1", "--workers", "1",
            "--shard-size", "2"]
    assert main([*base, "--nonlenses", "3"]) == 0  # 2 shards
    capsys.readouterr()
    assert main([*base, "--nonlenses", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds 2 shards" in err[0] and "--overwrite" in err[0]
    assert len(list((tmp_path / "s").glob("*.parquet"))) == 2  # untouched
    assert main([*base, "--nonlenses", "1", "--overwrite"]) == 0
    assert [p.name for p in (tmp_path / "s").glob("*.parquet")] == ["part-00000.parquet"]
    assert pq.read_table(out).num_rows == 2


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    assert main(["import-npy", str(tmp_path / "nothing"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lensscan import-npy: error:") and "Traceback" not in err
    assert main(["score", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a typo left an empty output folder behind
    (tmp_path / "mine").mkdir()  # a folder that was there stays
    assert main(["score", str(tmp_path / "missing"), str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir()
    capsys.readouterr()
    assert main(["score", str(tmp_path), str(tmp_path.with_name(tmp_path.name + "_o")), "--model",
                 str(tmp_path / "nomodel")]) == 2
    assert "not a lensscan model folder" in capsys.readouterr().err


@pytest.mark.slow
def test_job_script_runs_under_plain_python(tiny_model, tmp_path):
    write_parquet(str(tmp_path / "in" / "p.parquet"), make_batch(50, seed=1))
    r = subprocess.run([sys.executable, "jobs/score_survey.py", "--input", str(tmp_path / "in"),
                        "--output", str(tmp_path / "out"), "--model", tiny_model, "--top", "5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "scored 50 of 50 rows" in r.stdout and "5 candidates" in r.stdout
    assert (tmp_path / "out" / "_manifest.json").exists()


@pytest.mark.parametrize("script,args,message", [
    ("train_ensemble.py", ["--prior", "2"], "--prior 2.0: a prevalence must lie strictly"),
    ("train_ensemble.py", ["--init-from", "nowhere"], "nowhere: not a lensscan model folder"),
    ("robustness.py", ["--tests", "t", "--init", "nowhere", "--reference-only"],
     "not a lensscan model folder"),
    # found by review: found only after hours of training, or silently dropped
    ("robustness.py", ["--tests", "t"], "no complete test set (22 of 22 missing); give "
                                        "--make-tests"),
])
def test_training_jobs_refuse_in_one_line(tmp_path, script, args, message):
    """The jobs end as ``lensscan`` commands do: exit 2, one line naming the problem."""
    write_parquet(str(tmp_path / "d" / "p.parquet"), make_batch(8, seed=1))
    r = subprocess.run([sys.executable, f"jobs/{script}", "--train", str(tmp_path / "d"),
                        "--val", str(tmp_path / "d"), "--out", str(tmp_path / "o"), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_residual_members_are_the_recipe_with_residual_channels(tmp_path):
    import importlib.util

    from lensscan.train.ensemble import member_config
    from lensscan.train.recipes import DEFAULT_MEMBERS

    spec = importlib.util.spec_from_file_location("train_ensemble", ROOT / "jobs/train_ensemble.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    wide = job.with_residual(DEFAULT_MEMBERS)
    assert wide.keys() == DEFAULT_MEMBERS.keys()
    for name, member in wide.items():
        cfg = member_config(name, "d", "v", "o", **member)
        assert cfg.arch_kwargs == {"residual": True} and cfg.seed == DEFAULT_MEMBERS[name]["seed"]
    r = subprocess.run([sys.executable, "jobs/train_ensemble.py", "--train", "d", "--val", "v",
                        "--out", str(tmp_path / "o"), "--residual", "--baseline"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--residual trains the ensemble's members" in r.stderr


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lensscan.cli", "demo", "--workdir",
                        str(tmp_path / "demo")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "true lenses recovered in the top 30:" in out
    found = int(out.split("recovered in the top 30: ")[1].split("/")[0])
    assert found >= 15, out  # the bundled ensemble finds most simulated lenses
    run = tmp_path / "demo" / "run"
    manifest = json.loads((run / "_manifest.json").read_text())
    assert manifest["counts"]["rows_read"] == 3000 == manifest["counts"]["rows_scored"]
    assert (run / "candidates.parquet").exists() and (run / "gallery.html").exists()
    assert str(run / "gallery.html") in out


def test_outputs_that_are_files_empty_or_the_input_are_refused_before_any_write(
        tmp_path, capsys, monkeypatch):
    """Found by probing: --overwrite deleted a file given as OUT; an empty path was the current
    folder (simulate --overwrite removed its shards; calibrate '' rewrote the bundled model's
    card); inject --out SURVEY --overwrite emptied the survey; huge counts filled memory."""
    monkeypatch.chdir(tmp_path)
    write_parquet("survey/p.parquet", make_batch(6, seed=1))
    write_parquet("here.parquet", make_batch(2, seed=2))
    pathlib.Path("afile").write_text("keep me")
    inject = ["inject", "survey", "--lenses", "2", "--negatives", "1", "--psf-fwhm",
              "0.8,0.7,0.6", "--overwrite", "--out"]
    for argv, said in (
            (["simulate", "afile", "--lenses", "1", "--nonlenses", "1", "--overwrite"],
             "afile is a file, not a folder"),
            (["simulate", "afile/sub", "--lenses", "1", "--nonlenses", "1"],
             f"afile/sub: {tmp_path / 'afile'} is a file, not a folder"),
            (["simulate", "", "--lenses", "1", "--nonlenses", "1", "--overwrite"],
             "'': an empty path"),
            (["simulate", "s", "--lenses", "10", "--nonlenses", "2", "--shard-size", "0"], None),
            (["simulate", "s", "--lenses", "200000", "--nonlenses", "0", "--shard-size", "1"],
             "at most 100,000 shards; give a larger --shard-size"),
            (["simulate", "survey", "--lenses", "200000", "--nonlenses", "0", "--shard-size",
              "1", "--overwrite"], "at most 100,000 shards"),  # checked before the removal
            (["inject", "survey", "--out", "", "--lenses", "1", "--negatives", "1",
              "--overwrite"], "'': an empty path"),
            (["cutout", "cat.csv", "img-{band}.fits", "--out", "", "--overwrite"],
             "'': an empty path"),
            (["mosaic", "afile/m.png"], "afile is a file, not a folder"),
            (["calibrate", "", "survey"], "model '': an empty name"),
            (["calibrate", "default", ""], "'': an empty path"),
            ([*inject, "survey"], "the survey lies inside --out"),
            ([*inject, "survey/sub"], "lies inside the survey"),
            ([*inject, "afile"], "afile is a file, not a folder")):
        if said is None:
            with pytest.raises(SystemExit):
                main(argv)
            capsys.readouterr()
            continue
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], (argv, err)
    for count in ("--lenses", "--nonlenses"):
        with pytest.raises(SystemExit):
            main(["simulate", "s", "--lenses", "1", "--nonlenses", "1", count, "10" * 10])
        assert "must be 100,000,000 or less" in capsys.readouterr().err
    assert pathlib.Path("afile").read_text() == "keep me"
    assert sorted(p.name for p in pathlib.Path("survey").iterdir()) == ["p.parquet"]
    assert pathlib.Path("here.parquet").exists() and not pathlib.Path("s").exists()

"""Bad input and misuse end in one clear line naming the file (and row) and the problem."""

from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits
from astropy.table import Table
from support import finish_output, make_batch

from lensscan.catalog.truth import read_truth, recovery
from lensscan.cli import main
from lensscan.errors import ShardError
from lensscan.io import fits as fio
from lensscan.score import commit

ORDER = ["object_id", "ra", "dec", "score", "shard", "row", "status"]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_truncated_fits_says_truncated(tmp_path):
    url = str(tmp_path / "s.fits")
    fio.write_fits(url, make_batch(10, seed=1))
    data = (tmp_path / "s.fits").read_bytes()
    (tmp_path / "s.fits").write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"s\.fits: truncated FITS file: \d+ bytes") as info:
        fio.fits_info(url)
    assert "OBJECTS" not in str(info.value) and info.value.rows == 10


def test_fits_with_other_hdu_names_says_what_is_expected(tmp_path):
    b = make_batch(10, seed=2)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(b["image"], name="IMAGES"),
                  fits.BinTableHDU.from_columns(
                      [fits.Column("ID", format="K", array=b["object_id"])], name="CATALOG")]
                 ).writeto(tmp_path / "named.fits")
    with pytest.raises(ShardError) as info:
        fio.fits_info(str(tmp_path / "named.fits"))
    msg = str(info.value)
    assert "'IMAGES' holds 10 cutouts" in msg and "named CUTOUTS" in msg and "OBJECTS" in msg
    assert "HDUs here: PRIMARY, IMAGES, CATALOG" in msg


def test_model_pointing_at_a_file(tmp_path):
    (tmp_path / "in").mkdir()
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"x")
    code, _, err = _cli("score", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                        str(model))
    assert code == 2
    assert _one_line(err) == (f"lensscan score: error: {model}: is a file, not a model folder "
                              "with card.json and model.safetensors")


def test_query_on_a_missing_folder(tmp_path):
    code, _, err = _cli("query", str(tmp_path / "nothing"), "--top", "3")
    assert code == 2
    assert "no scoring output here" in _one_line(err)


def _partial_output(tmp_path) -> str:
    """Committed parts but no manifest: a run that stopped half-way."""
    shard = str(tmp_path / "in" / "p.parquet")
    batch = make_batch(10, seed=4)
    from lensscan.io.parquet import write_parquet

    write_parquet(shard, batch)
    out = str(tmp_path / "out")
    rows = {"object_id": batch["object_id"], "ra": batch["ra"], "dec": batch["dec"],
            "score": np.linspace(0, 1, 10, dtype=np.float32),
            "shard": np.full(10, shard, dtype=object), "row": np.arange(10),
            "status": np.full(10, "ok", dtype=object)}
    commit.write_unit(out, "u0", rows, ORDER)
    return out


def test_query_and_gallery_warn_on_incomplete_output(tmp_path):
    out = _partial_output(tmp_path)
    code, stdout, err = _cli("query", out, "--top", "3", "--format", "csv")
    assert code == 0 and len(stdout.strip().splitlines()) == 4
    line = _one_line(err)
    assert line.startswith("lensscan query: warning: ") and "is incomplete" in line
    code, _, err = _cli("gallery", out, "--out", str(tmp_path / "g.html"), "--top", "3")
    assert code == 0
    assert any(x.startswith("lensscan gallery: warning: ") and "is incomplete" in x
               for x in err.splitlines())


def test_unknown_architecture_fails_before_ray(tmp_path):
    """`train --arch resnet50` fails at once (it took 2 minutes and 1,900 lines)."""
    from lensscan.io.parquet import write_parquet

    write_parquet(str(tmp_path / "d" / "p.parquet"), make_batch(10, seed=1))
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "lensscan.cli", "train", str(tmp_path / "d"),
                        "--out", str(tmp_path / "m"), "--arch", "resnet50"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and time.time() - t0 < 60
    line = _one_line(r.stderr)
    assert "--arch 'resnet50': unknown architecture" in line and "multiscale_resnet" in line


@pytest.fixture
def scored(tmp_path):
    """A complete output with objects 0..9 at known positions, best score first."""
    n = 10
    out = str(tmp_path / "run")
    rows = {"object_id": np.arange(n), "ra": np.linspace(10, 11, n),
            "dec": np.linspace(-5, -4, n), "score": np.linspace(1, 0.1, n).astype(np.float32),
            "shard": np.full(n, "s.parquet", dtype=object), "row": np.arange(n),
            "status": np.full(n, "ok", dtype=object)}
    commit.write_unit(out, "u", rows, ORDER)
    commit.finalize(out, ["u"], 0.5, None)
    finish_output(out)
    return out, rows


def test_truth_fits_big_endian_with_survey_column_names(scored, tmp_path):
    """A FITS truth table (big-endian) with RAJ2000/DEJ2000 and OBJID columns reads; it
    crashed with "Byte-swapped arrays not supported" and needed exactly ra/dec."""
    out, rows = scored
    t = Table({"OBJID": np.array([2, 5], ">i8"), "RAJ2000": rows["ra"][[2, 5]].astype(">f8"),
               "DEJ2000": rows["dec"][[2, 5]].astype(">f8")})
    t.write(tmp_path / "known.fits")
    truth = read_truth(str(tmp_path / "known.fits"))
    assert truth.column_names[:3] == ["object_id", "ra", "dec"]
    table, summary = recovery(out, truth, top=5, radius_arcsec=1.0)
    assert sorted(table.column("rank").to_pylist()) == [3, 6] and summary["recovered"] == 1
    code, _, err = _cli("query", out, "--truth", str(tmp_path / "known.fits"), "--top", "5",
                        "--format", "json")
    assert code == 0, err


def test_truth_columns_option_and_positions_off_the_sky(scored, tmp_path):
    out, rows = scored
    pa_table = pa.table({"name": ["a", "b"], "alpha": rows["ra"][[0, 1]],
                         "delta": rows["dec"][[0, 1]]})
    import pyarrow.parquet as pq

    pq.write_table(pa_table, tmp_path / "k.parquet")
    code, stdout, err = _cli("query", out, "--truth", str(tmp_path / "k.parquet"),
                             "--truth-cols", "name,alpha,delta", "--match-radius", "1",
                             "--top", "5", "--format", "csv")
    assert code == 0, err
    ranks = {r["known_id"]: r["rank"] for r in csv.DictReader(io.StringIO(stdout))}
    assert ranks == {"a": "1", "b": "2"}
    pq.write_table(pa.table({"ra": [10.0, 361.0], "dec": [0.0, 0.0]}), tmp_path / "bad.parquet")
    code, _, err = _cli("query", out, "--truth", str(tmp_path / "bad.parquet"), "--top", "5")
    assert code == 2
    assert "bad.parquet: row 2: ra 361, dec 0 are not degrees on the sky" in _one_line(err)


_SWALLOWED_CTRL_C = """
import os, signal, sys
from lensscan.cli.exits import run_command

signal.signal(signal.SIGINT, signal.default_int_handler)  # as an interactive shell starts it
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Finalized:
    def __del__(self):  # as a file object's close-on-collect: Python drops what it raises
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100000):
            pass


def work():
    Finalized()
    print("finished")


sys.exit(run_command("score", work))
"""


def test_ctrl_c_swallowed_by_a_finalizer_still_ends_the_command_with_130():
    """Python drops a KeyboardInterrupt raised inside ``__del__``: the command would finish
    and say 0 although the user pressed Ctrl-C."""
    r = subprocess.run([sys.executable, "-c", _SWALLOWED_CTRL_C], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 130, (r.stdout, r.stderr)
    # one line, no "Exception ignored" traceback
    assert r.stderr == ("lensscan score: interrupted: Ctrl-C was pressed while the command ran "
                        "on to its end; rerun the same command to check that everything is "
                        "done\n"), r.stderr
    assert "finished" in r.stdout  # the work ran on: the signal did not stop it, the exit says it


def test_an_error_of_ray_itself_is_one_line_to_rerun(capsys):
    """Ray's own errors (an actor or node lost past its retries, out of memory) were a
    traceback and exit status 1; other unexpected errors still raise (a bug shows itself)."""
    from ray.exceptions import ActorDiedError

    from lensscan.cli.exits import EXIT_STORAGE, run_command

    def lost() -> None:
        raise ActorDiedError()

    assert run_command("score", lost) == EXIT_STORAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lensscan score: error: Ray: ActorDiedError: ")
    assert err[0].endswith("rerun the same command to resume")

    def bug() -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_command("score", bug)


def test_the_error_line_comes_after_the_warnings(capsys):
    """Warnings were printed after the error, so the last line on stderr (the README's place
    for the URL and what to do) was a warning."""
    import warnings

    from lensscan.cli.exits import run_command
    from lensscan.errors import StorageError

    def fails() -> None:
        warnings.warn("3 rows repeat an object id", UserWarning, stacklevel=1)
        raise StorageError("s3://b/p.parquet", "cannot read")

    assert run_command("score", fails) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lensscan score: warning: UserWarning (test_messages.py): 3 rows repeat an "
                   "object id",
                   "lensscan score: error: s3://b/p.parquet: cannot read; rerun the same "
                   "command to resume"]

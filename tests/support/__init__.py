"""Plain helpers shared by the tests (importable from every test folder: pyproject's
``[tool.pytest.ini_options] pythonpath = ["tests"]``): seeded batches, free ports, finished
scoring outputs, headless Chromium. Fixtures live in ``tests/conftest.py``; the simulated coadds
in ``support.coadds``; today's frozen numpy preprocessing in ``support.reference_preprocess``."""

from __future__ import annotations

import collections
import contextlib
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

#: Ray's command line, beside this Python (the venv's)
RAY = str(pathlib.Path(sys.executable).parent / "ray")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def driver_lines(err: str) -> str:
    """``err`` without the lines Ray forwards from its workers ("(Name pid=123) ..."): a
    worker of an earlier test torn down late may print its own traceback into this one's
    stderr, which says nothing of what the command printed."""
    return "\n".join(line for line in err.splitlines()
                     if not re.match(r"(\x1b\[[0-9;]*[A-Za-z])*\((\w+ )?pid=\d+", line.lstrip()))


def ctrl_c(cmd: list[str], ready: Callable[[subprocess.Popen], bool]) -> tuple[int, str]:
    """Run ``cmd`` in a process group of its own, as a terminal's foreground job, and press
    Ctrl-C (SIGINT to the whole group) once ``ready(proc)`` is true; returns the exit status and
    stderr. ``ready`` is polled and may assert that the run is still going.

    The command starts with Ctrl-C's default action, as an interactive shell starts a foreground
    job, even when this test process ignores SIGINT (a suite started as a script's background
    job: an ignored signal stays ignored across exec, and Python then installs no
    KeyboardInterrupt, as under ``nohup``). A handled signal is reset to the default at exec,
    so Python's own handler is put in place for the spawn (no ``preexec_fn``: this process has
    Ray's threads)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert ready(proc), "the run was not ready to be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def make_batch(n: int, seed: int = 0, start_id: int = 0, labels: bool = True) -> dict:
    """A batch of ``n`` seeded cutouts: sky noise plus a blob, ids start_id.."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.05, (n, 3, 64, 64)).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    blob = np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / 30.0).astype(np.float32)
    images += rng.uniform(1, 20, (n, 3, 1, 1)).astype(np.float32) * blob
    batch = {
        "object_id": np.arange(start_id, start_id + n, dtype=np.int64),
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-60, 60, n),
        "image": images,
    }
    if labels:
        batch["label"] = (rng.random(n) < 0.3).astype(np.int8)
    return batch


def finish_output(out: str, shards: list[str] = ()) -> None:
    """Make a hand-built scoring output complete, as a run leaves it: the input listing of
    ``shards`` (their current size and ETag/mtime) and a manifest."""
    from lensscan.io import storage
    from lensscan.score import commit, fingerprint

    rec = fingerprint.RunRecord(input="test", model_checksum="test", threshold=0.5, top=None,
                                preprocessing={}, rows_per_unit=2048,
                                shards={s: storage.stamp(s) for s in shards})
    fingerprint.write(out, rec)
    commit.write_json(storage.join(out, commit.MANIFEST), {"fingerprint": rec.fingerprint})


def chromium(tmp_path, downloads=None):
    """Headless Debian Chromium under selenium; files it downloads go to ``downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    if downloads:
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def downloaded(path, timeout: float = 10.0) -> str:
    """The text of a file the browser downloads to ``path``, once it is there and not empty."""
    deadline = time.time() + timeout
    while time.time() < deadline and not (path.exists() and path.stat().st_size):
        time.sleep(0.1)
    return path.read_text()


@contextlib.contextmanager
def s3_calls(url: str) -> Iterator[collections.Counter]:
    """Count the S3 requests, by operation (``GetObject``, ``HeadObject``, ...), that this
    process's filesystem for ``url`` sends inside the block (the client's own request events:
    the requests really go to the test server)."""
    from fsspec.asyn import sync

    from lensscan.io import storage

    fs, _ = storage.filesystem(url)
    client = sync(fs.loop, fs.set_session)
    calls: collections.Counter = collections.Counter()

    def count(model, **_) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.s3", count)
    try:
        yield calls
    finally:
        client.meta.events.unregister("before-call.s3", count)


def top_level_imports(module) -> set[str]:
    """The top-level packages a module's source imports (``import a.b``, ``from a.b import c``:
    ``a``)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    return imported | {n.module.split(".")[0] for n in ast.walk(tree)
                       if isinstance(n, ast.ImportFrom) and n.module}


def scored_layout(write_layout: Callable, root, lenses: int, nonlenses: int, seed: int):
    """A test renderer's DeepLense layout (``write_layout(out, lenses, nonlenses, seed, mapper)``),
    imported with ``import-npy`` and scored by the bundled model as an outside set is: its truth
    table joined one to one to the scores, and the run's manifest."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    import duckdb
    import pandas as pd

    from lensscan.config import ScoreConfig
    from lensscan.io.npy import import_npy
    from lensscan.score.pipeline import score_survey

    # every core this process may use renders (the renderers are numpy, one process each);
    # each object has its own seed, so the bytes are those of a plain loop
    pool = ProcessPoolExecutor(len(os.sched_getaffinity(0)),
                               mp_context=multiprocessing.get_context("spawn"))
    try:
        truth = write_layout(str(root / "npy"), lenses, nonlenses, seed=seed,
                             mapper=partial(pool.map, chunksize=25))
    finally:  # an error or a timeout leaves no queued renders running
        pool.shutdown(cancel_futures=True)
    counts = import_npy(str(root / "npy"), str(root / "shards"), progress=False)
    assert counts["files"] == lenses + nonlenses and counts["skipped"] == 0
    manifest = score_survey(ScoreConfig(input=str(root / "shards"), output=str(root / "out"),
                                        engine="local", progress=False))
    scores = duckdb.sql(f"select object_id, score from read_parquet('{root}/out/scores/*.parquet')"
                        ).df()
    frame = pd.read_csv(truth).merge(scores, on="object_id", validate="one_to_one")
    assert len(frame) == lenses + nonlenses
    return frame, manifest


def deflector_ks_pvalues(frame) -> dict[str, float]:
    """Two-sample KS p-value of lenses against non-lens ellipticals in each deflector column
    of a test renderer's truth table (r_mag, reff_arcsec, sersic_n, g_r)."""
    from scipy import stats

    lenses, ellipticals = frame[frame["label"] == 1], frame[frame["kind"] == "elliptical"]
    return {c: stats.ks_2samp(lenses[c], ellipticals[c]).pvalue
            for c in ("r_mag", "reff_arcsec", "sersic_n", "g_r")}

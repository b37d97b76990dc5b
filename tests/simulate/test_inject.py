"""`lensscan inject`: lensed sources painted onto real host cutouts conserve flux, leave the host
untouched away from the arc, and the training shards carry labels, truth and host ids."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver

from lensscan.cli import main
from lensscan.config import InjectConfig
from lensscan.io.parquet import flux_metadata, parquet_info, write_parquet
from lensscan.io.shards import read_shard
from lensscan.io.storage import filesystem, list_shards, read_bytes
from lensscan.simulate.inject import paint, sky_sigma, theta_e_from_mag
from lensscan.simulate.kinds import render_object
from lensscan.simulate.population import Rendering, preset
from lensscan.simulate.render import lens_model, mag_to_flux

PSF = np.array([0.9, 0.8, 0.7])


def _host(i: int = 0) -> np.ndarray:
    return render_object("elliptical", np.random.default_rng([11, i]))[0]


def _paint(host, seed, poisson=True, pop=None, **kw):
    cfg = InjectConfig("s", "o", 1, 1, poisson=poisson, **kw)
    return paint(host, (0.2, -0.3), PSF, np.random.default_rng(seed), cfg,
                 pop or preset("broad")[1], 0.168, 27.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_injected_flux_is_source_flux_times_magnification(seed):
    host = _host(seed)
    p = _paint(host, seed, poisson=False)
    added = float((p.image - host)[1].astype(np.float64).sum())
    expected = mag_to_flux(p.truth["source_mag_r"]) * p.truth["magnification"]
    assert added == pytest.approx(expected, rel=0.03)
    assert p.truth["n_images"] >= 2 and p.truth["magnification"] > 1


def test_magnification_of_a_compact_source_is_the_point_source_one():
    """For a source much smaller than the lens, the truth magnification is the summed |mu| of
    the point-source images that lenstronomy's solver finds."""
    pop = replace(preset("hsc")[1], source_reff=(0.02, 0.03), rendering=Rendering(
        source={"sersic": 1.0}), inner_beta=0.5, near_caustic_frac=0.0)
    for seed in (4, 5):
        p = _paint(_host(seed), seed, poisson=False, pop=pop, supersample=8)
        sx, sy = p.kw_lens[0]["center_x"] + p.truth["source_x"], \
            p.kw_lens[0]["center_y"] + p.truth["source_y"]
        model = lens_model(p.profiles)
        xs, ys = LensEquationSolver(model).image_position_from_source(
            sx, sy, p.kw_lens, min_distance=0.01, search_window=8, precision_limit=1e-10)
        mu = np.abs(model.magnification(xs, ys, p.kw_lens))
        assert p.truth["magnification"] == pytest.approx(mu[mu >= 0.1].sum(), rel=0.05)


def test_the_arcs_noise_does_not_depend_on_the_surveys_flux_unit():
    """The same host and arc in nanomaggies (zero-point 22.5) and at zero-point 27: the gain is
    per zero-point-27 unit, so the arc's shot noise in sky sigmas and its truth S/N are the
    same (the gain used to be taken per survey unit: 63 times the shot variance at 22.5)."""
    host27 = _host(3)
    cfg = InjectConfig("s", "o", 1, 1)
    out = {}
    for zp in (27.0, 22.5):
        host = host27 * 10 ** (0.4 * (zp - 27.0))
        p = paint(host, (0.2, -0.3), PSF, np.random.default_rng(9), cfg, preset("broad")[1],
                  0.168, zp)
        clean = paint(host, (0.2, -0.3), PSF, np.random.default_rng(9),
                      replace(cfg, poisson=False), preset("broad")[1], 0.168, zp)
        bright = clean.added[1] > 3 * sky_sigma(host)[1]
        noise = (p.added[1] - clean.added[1])[bright].std() / sky_sigma(host)[1]
        out[zp] = (p.truth["arc_snr"], noise)
    assert out[22.5][0] == pytest.approx(out[27.0][0], rel=1e-3)
    assert out[22.5][1] == pytest.approx(out[27.0][1], rel=0.05)


def test_host_pixels_untouched_outside_the_arc():
    host = _host(7)
    clean = _paint(host, 7, poisson=False)  # the same draws: the same arc, noiseless
    noisy = _paint(host, 7, poisson=True)
    arc = clean.image.astype(np.float64) - host
    sky = sky_sigma(host)[:, None, None]
    far = np.abs(arc) < 1e-3 * sky
    assert far.mean() > 0.05
    np.testing.assert_array_equal(noisy.image[far], host[far])  # bit for bit
    bright = arc > 0.5 * sky
    assert bright.any() and (noisy.image[bright] != host[bright]).all()
    # the noise is the added flux's own: its variance is the arc's counts / gain
    gain = np.array([600.0, 800.0, 1500.0])[:, None, None]
    resid = (noisy.image - clean.image)[bright] / np.sqrt(np.broadcast_to(
        arc / gain, arc.shape)[bright])
    assert 0.7 < resid.std() < 1.3


def test_einstein_radius_follows_the_host_or_a_column():
    cfg = InjectConfig("s", "o", 1, 1, theta_e_scatter=0.0)
    rng = np.random.default_rng(0)
    assert theta_e_from_mag(21.0, rng, cfg) == pytest.approx(1.0)
    assert theta_e_from_mag(19.0, rng, cfg) == pytest.approx(10 ** 0.4)  # L^0.5
    assert theta_e_from_mag(26.0, rng, cfg) == 0.5 and theta_e_from_mag(np.nan, rng, cfg) == 0.5
    p = paint(_host(), (0.0, 0.0), PSF, np.random.default_rng(1), cfg, preset("hsc")[1], 0.168,
              27.0, theta_e=1.7)
    assert p.truth["theta_e"] == 1.7 and p.kw_lens[0]["theta_E"] == 1.7


def test_tasks_and_psf_columns():
    from lensscan.simulate.trainset import _groups, _psf

    jobs = {"row": np.arange(100), "shard": np.repeat([1, 0], 50),
            "kind": np.r_[np.ones(50, int), np.zeros(50, int)]}
    groups = _groups(jobs, size=30, lenses_per_task=20)
    assert [len(g) for g in groups] == [30, 30, 20, 20]  # shard 0 first, then lenses by 20
    assert sorted(np.concatenate(groups).tolist()) == list(range(100))
    batch = {"seeing_g": np.array([1.0, np.nan]), "seeing_r": np.array([0.9, 0.8]),
             "seeing_i": np.array([0.8, 0.7]), "psf_fwhm": np.full((2, 3), 0.5)}
    cfg = InjectConfig("s", "o", 1, 1, psf_fwhm_cols=["seeing_g", "seeing_r", "seeing_i"])
    assert _psf(batch, 0, cfg).tolist() == [1.0, 0.9, 0.8]
    assert _psf(batch, 1, cfg).tolist() == [0.5, 0.5, 0.5]  # a NaN column: the psf_fwhm column
    batch["seeing_g"] = np.array([-99.0, 0.0])  # fill values are no PSF either
    assert _psf(batch, 0, cfg).tolist() == _psf(batch, 1, cfg).tolist() == [0.5, 0.5, 0.5]
    batch["psf_fwhm"] = np.full((2, 3), 99.0)
    assert _psf(batch, 0, replace(cfg, psf_fwhm=[1.0, 1.0, 1.0])).tolist() == [1.0, 1.0, 1.0]
    assert _psf(batch, 0, cfg) is None  # no usable PSF: a bad host, counted


@pytest.mark.parametrize(("args", "message"), [
    (["--theta-e-range", "0", "0"], "--theta-e-range 0 0: give 0 < MIN <= MAX"),
    (["--theta-e-range", "5", "1"], "--theta-e-range 5 1: give 0 < MIN <= MAX"),
    (["--gain", "0,0,0"], "--gain 0,0,0: give positive numbers"),
    (["--psf-fwhm", "0,1,1"], "--psf-fwhm: must be more than 0, not 0"),  # the option's bound
    (["--psf-fwhm", "1,nan,1"], "--psf-fwhm: must be a finite number, not nan"),
    (["--host-negatives", "2"], "must be 1 or less"),
    (["--host-negatives", "nan"], "must be a finite number"),
    (["--theta-e-col", "mag_r"], ": mag_r = 20.3 is not an Einstein radius in (0, 5.38] "
                                 "arcsec"),  # a magnitude column given by mistake
    # found by probing: these reached the Ray workers and came back as their tracebacks
    (["--theta-e-slope", "nan"], "--theta-e-slope: must be a finite number, not nan"),
    (["--host-mag-ref", "nan"], "--host-mag-ref: must be a finite number, not nan"),
    (["--theta-e-scatter", "1e300"], "--theta-e-scatter: must be 1 or less"),
    (["--supersample", "100000"], "--supersample: must be 16 or less"),
    (["--seed", "-1"], "--seed: must be 0 or more, not -1"),
    (["--psf-fwhm-cols", "kind,kind,kind"], "--psf-fwhm-cols: column 'kind' holds object "
                                            "values, not FWHMs"),
    (["--hosts", "image > 0"], "column 'image' holds an array per row"),
])
def test_options_that_cannot_paint_an_arc_are_one_line(tmp_path, capsys, args, message):
    _survey(f"{tmp_path}/survey")
    try:
        rc = main(["inject", f"{tmp_path}/survey", "--out", f"{tmp_path}/o", "--lenses", "2",
                   "--negatives", "1", *args])
    except SystemExit as stop:  # refused by the option's own bounds, as argparse does
        rc = stop.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "o").exists()


def _survey(url: str) -> dict[str, str]:
    """12 real-looking cutouts in two shards: 8 ellipticals (the hosts), 4 spirals."""
    kinds = ["elliptical"] * 8 + ["spiral"] * 4
    for s in range(2):
        rows = range(s * 6, s * 6 + 6)
        batch = {"object_id": np.array([100 + i for i in rows], np.int64),
                 "ra": np.linspace(150, 151, 6), "dec": np.linspace(2, 3, 6),
                 "image": np.stack([render_object(kinds[i], np.random.default_rng([3, i]))[0]
                                    for i in rows]),
                 "kind": np.array([kinds[i] for i in rows], dtype=object),
                 "mag_r": np.array([20.0 + 0.1 * i for i in rows]),
                 "psf_fwhm": np.tile(PSF.astype(np.float32), (6, 1)),
                 "offset_x": np.zeros(6, np.float32), "offset_y": np.zeros(6, np.float32)}
        write_parquet(f"{url}/s{s}.parquet", batch, metadata=flux_metadata(0.168, 27.0))
    return {"hosts": "kind = 'elliptical' AND mag_r < 20.65"}  # ids 100-106


def test_graded_lenses_are_neither_hosts_nor_negatives():
    """A survey object graded A or B is a lens: drawn as a negative it would teach the model
    that it is none (a small survey made this likely)."""
    from lensscan.simulate.trainset import FALSE_POSITIVE, LENS, NEGATIVE, choose

    n = 30
    index = {"row": np.arange(n)}
    hosts = np.arange(n) < 8
    fp = np.isin(np.arange(n), [8, 9])
    graded_lens = np.isin(np.arange(n), [2, 10, 11, 12])  # one of them passes the host filter
    cfg = InjectConfig(survey="s", out="o", lenses=10, negatives=10, seed=3)
    jobs = choose(cfg, index, hosts, fp, graded_lens)
    at = {k: set(jobs["at"][jobs["kind"] == k].tolist()) for k in (LENS, NEGATIVE,
                                                                    FALSE_POSITIVE)}
    assert not (at[LENS] | at[NEGATIVE]) & {2, 10, 11, 12}
    assert at[FALSE_POSITIVE] == {8, 9} and at[LENS] == {0, 1, 3, 4, 5, 6, 7}
    assert len(jobs["at"][jobs["kind"] == NEGATIVE]) == 10


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_inject_writes_labelled_training_shards(tmp_path, where, request, ray_local, capsys):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket")
    spec = _survey(f"{root}/survey")
    grades = tmp_path / "grades.csv"
    grades.write_text("object_id,grade\n110,not a lens\n111,A\n109,C\n77,n\n")
    out = f"{root}/train"
    assert main(["inject", f"{root}/survey", "--out", out, "--lenses", "9", "--negatives", "2",
                 "--hosts", spec["hosts"], "--false-positives", str(grades), "--seed", "1",
                 "--shard-size", "4", "--preset", "hsc"]) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert counts["lenses"] == 9 and counts["negatives"] == 2 and counts["false_positives"] == 1
    assert counts["host_pool"] == 7 and counts["distinct_hosts"] == 7  # reused: 9 > 7
    if where == "s3":
        filesystem(out)[0].invalidate_cache()
    rows = [read_shard(u) for u in list_shards(out)]
    batch = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    assert parquet_info(list_shards(out)[0]).pixel_scale == 0.168
    lens = batch["label"] == 1
    assert lens.sum() == 9 and (batch["injected"][lens] == 1).all()
    assert set(batch["host_id"][lens].tolist()) == {str(i) for i in range(100, 107)}
    assert len(set(batch["object_id"].tolist())) == len(batch["object_id"]) == 12
    assert (batch["n_images"][lens] >= 2).all() and np.isfinite(batch["theta_e"][lens]).all()
    neg = batch["host_id"][~lens].tolist()
    fp = batch["host_id"][batch["origin"] == "false_positive"].tolist()
    assert fp == ["110"] and "110" in neg  # graded "not a lens" only, as a negative
    assert "111" not in batch["host_id"].tolist()  # graded A: neither a host nor a negative
    assert counts["graded_lenses_kept_out"] == 1 and counts["graded_uncertain_kept_out"] == 1
    assert "109" not in batch["host_id"].tolist()  # graded C: left out of training, of both
    assert counts["false_positives_not_in_survey"] == 1  # 77
    assert counts["lenses_asked"] == 9 and counts["rows"] == 12 and counts["bad_hosts"] == 0
    assert not set(neg) & set(batch["host_id"][lens].tolist())  # hosts never negatives
    assert np.isnan(batch["theta_e"][~lens]).all() and (batch["status"] == "ok").all()
    summary = json.loads(read_bytes(f"{out}/_inject.json"))
    assert summary["config"]["hosts"] == spec["hosts"]


@pytest.mark.slow
def test_a_survey_that_gives_no_row_fails(tmp_path, ray_local, capsys):
    """Every cutout unusable (NaN pixels): nothing is written and the run says so."""
    batch = {"object_id": np.arange(4), "ra": np.zeros(4), "dec": np.zeros(4),
             "image": np.full((4, 3, 64, 64), np.nan, np.float32),
             "psf_fwhm": np.tile(PSF.astype(np.float32), (4, 1))}
    write_parquet(f"{tmp_path}/survey/s.parquet", batch, metadata=flux_metadata(0.168, 27.0))
    assert main(["inject", f"{tmp_path}/survey", "--out", f"{tmp_path}/o", "--lenses", "2",
                 "--negatives", "1"]) == 2
    err = capsys.readouterr().err
    assert "no lens could be painted (2 hosts unusable" in err


def test_hosts_not_in_the_survey_and_repeated_ids_are_said(tmp_path, ray_local, capsys):
    """Found by probing: host ids the survey lacks were dropped, and a survey listing its rows
    twice was drawn from, both without a word; an empty survey was said to have no row passing
    a --hosts that was not given."""
    _survey(f"{tmp_path}/survey")
    (tmp_path / "hosts.csv").write_text("object_id\n100\n9992\nabc\n")
    args = ["--lenses", "1", "--negatives", "1", "--hosts", str(tmp_path / "hosts.csv")]
    assert main(["inject", f"{tmp_path}/survey", "--out", f"{tmp_path}/o", *args]) == 0
    err = capsys.readouterr().err
    assert "hosts.csv: 2 of its 3 ids are not in the survey (first: '9992')" in err
    write_parquet(f"{tmp_path}/twice/a.parquet", read_shard(f"{tmp_path}/survey/s0.parquet"),
                  metadata=flux_metadata(0.168, 27.0))
    write_parquet(f"{tmp_path}/twice/b.parquet", read_shard(f"{tmp_path}/survey/s0.parquet"),
                  metadata=flux_metadata(0.168, 27.0))
    assert main(["inject", f"{tmp_path}/twice", "--out", f"{tmp_path}/o2", "--lenses", "1",
                 "--negatives", "1"]) == 0
    assert "6 rows repeat an earlier row's object id" in capsys.readouterr().err
    import pyarrow.parquet as pq

    (tmp_path / "empty").mkdir()
    pq.write_table(pq.read_table(f"{tmp_path}/survey/s0.parquet").slice(0, 0),
                   f"{tmp_path}/empty/a.parquet")
    assert main(["inject", f"{tmp_path}/empty", "--out", f"{tmp_path}/o3", "--lenses", "1",
                 "--negatives", "1"]) == 2
    assert "empty: the survey has no rows" in capsys.readouterr().err


def test_objects_graded_c_like_are_kept_out_of_both_pools(tmp_path):
    """C-like grades (left out of training) are neither hosts nor negatives; only the rows
    graded "not a lens" become false positives; ids not in the survey are counted once."""
    from lensscan.simulate.trainset import _false_positives

    grades = tmp_path / "g.csv"
    grades.write_text("object_id,grade\n1,C\n2,not a lens\n3,A\n77,n\n77,n\n")
    index = {"row": np.arange(5), "id_text": np.array(["0", "1", "2", "3", "2"], dtype=object)}
    cfg = InjectConfig("s", "o", 1, 1, false_positives=[str(grades)])
    fp, lens, c_like, missing = _false_positives(cfg, index)
    assert fp.tolist() == [False, False, True, False, True]
    assert lens.tolist() == [False, False, False, True, False]
    assert c_like.tolist() == [False, True, False, False, False] and missing == 1

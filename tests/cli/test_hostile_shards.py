"""Shards and options that once got past the checks: each now ends in a quarantined row with its
reason, or in one line naming the problem (exit 2), and the output stays one dataset."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import warnings

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import make_batch

from lensscan import modelcard
from lensscan.cli import main
from lensscan.errors import ModelError, ShardError
from lensscan.io import fits as fio
from lensscan.io.parquet import read_parquet, write_parquet
from lensscan.io.shards import plan_units, read_unit
from lensscan.score import resources


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _score(src, out, *extra, model=None) -> tuple[int, str, str]:
    args = ["score", str(src), str(out), "--engine", "local", "--no-progress", *extra]
    return _cli(*args, *(["--model", model] if model else []))


def _shard_with(url: str, n: int, **columns) -> None:
    """A valid shard of ``n`` rows, some columns replaced by Arrow arrays."""
    b = make_batch(n, seed=3)
    image = pa.FixedSizeListArray.from_arrays(pa.array(b["image"].reshape(-1)), 3 * 64 * 64)
    cols = {"object_id": pa.array(b["object_id"]), "ra": pa.array(b["ra"]),
            "dec": pa.array(b["dec"]), "image": image} | columns
    pq.write_table(pa.table(cols), url)


def _scored(tmp_path, model: str, seed: int, n: int = 4):
    """A survey of one shard under ``tmp_path/in``, scored into ``tmp_path/out``."""
    src = tmp_path / "in"
    src.mkdir()
    write_parquet(str(src / "a.parquet"), make_batch(n, seed=seed))
    code, _, err = _score(src, tmp_path / "out", model=model)
    assert code == 0, err
    return src, tmp_path / "out"


def _parts(out):
    return duckdb.sql(f"SELECT * FROM read_parquet('{out}/scores/*.parquet', "
                      "union_by_name=true) ORDER BY shard, row").df()


def test_a_column_that_cannot_be_converted_is_named_and_an_unused_one_is_not_read(tmp_path):
    url = str(tmp_path / "s.parquet")
    _shard_with(url, 4, ra=pa.array(["1", "2", "12h30m", "4"]))
    with pytest.raises(ShardError, match=r"s\.parquet: column 'ra' must hold degrees as "
                                         "numbers, not string"):
        read_parquet(url)
    _shard_with(url, 4, label=pa.array([0.0, 0.5, 1.0, 1.0]),
                psf_fwhm=pa.array([[0.7, 0.8, 0.9], None, [0.6, 0.6, 0.7], [0.5] * 3],
                                  pa.list_(pa.float32(), 3)))
    with pytest.raises(ShardError, match=r"column 'label' of row 1 \(0-based\) is 0.5, not a "
                                         "class"):
        read_parquet(url)
    # scoring reads only what it carries: the bad label does not cost the rows their scores
    unit = plan_units(url)[0]
    rows = read_unit(unit, columns=("object_id", "ra", "dec", "image"))
    assert list(rows["status"]) == ["ok"] * 4 and "label" not in rows
    # a null fixed-size list is a row of NaN, not a reshape error
    rows = read_unit(unit, columns=("object_id", "image", "psf_fwhm"))
    assert np.isnan(rows["psf_fwhm"][1]).all()
    np.testing.assert_allclose(rows["psf_fwhm"][2], [0.6, 0.6, 0.7], rtol=1e-6)


def test_shard_with_bad_coordinates_column_is_quarantined_with_its_reason(tmp_path, tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    _shard_with(str(src / "a.parquet"), 5)
    _shard_with(str(src / "b.parquet"), 3, dec=pa.array(["x", "1", "2"]))
    code, _, err = _score(src, tmp_path / "out", model=tiny_model)
    assert code == 0, err
    t = _parts(tmp_path / "out")
    bad = list(t[t["shard"].str.endswith("b.parquet")]["status"])
    assert len(bad) == 3 and all("column 'dec' must hold degrees" in s for s in bad)
    assert "b.parquet: column 'dec' must hold degrees as numbers" in err
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert m["counts"]["rows_read"] == 8 == m["counts"]["rows_scored"] + \
        m["counts"]["rows_quarantined"]


def test_null_pixels_are_quarantined_not_scored_as_zeros(tmp_path):
    url = str(tmp_path / "n.parquet")
    b = make_batch(3, seed=4)
    flat = b["image"].reshape(-1).astype(object)
    flat[12288 + 5: 12288 + 5 + 700] = None  # row 1: 700 null pixels
    image = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), 12288)
    pq.write_table(pa.table({"object_id": b["object_id"], "image": image}), url)
    got = read_parquet(url)
    assert list(got["status"]) == ["ok", "null_pixels: 700 null values", "ok"]


def test_uint64_ids_beyond_int64_are_refused_not_wrapped(tmp_path):
    url = str(tmp_path / "u.parquet")
    _shard_with(url, 2, object_id=pa.array([2**63 + 5, 7], pa.uint64()))
    with pytest.raises(ShardError, match="uint64 ids above 2\\*\\*63 - 1"):
        read_parquet(url)
    _shard_with(url, 2, object_id=pa.array([2**40, 7], pa.uint64()))
    assert list(read_parquet(url)["object_id"]) == [2**40, 7]


def test_string_id_survey_keeps_string_ids_in_a_rejected_shards_part(tmp_path, tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    _shard_with(str(src / "a.parquet"), 4, object_id=pa.array(["id1", "id2", "id3", "id4"]))
    _shard_with(str(src / "b.parquet"), 3, object_id=pa.array(["x", "y", "z"]),
                image=pa.array([[1.0]] * 3, pa.list_(pa.float32(), 1)))  # wrong image size
    code, _, err = _score(src, tmp_path / "out", model=tiny_model)
    assert code == 0, err
    types = {str(pq.read_schema(p).field("object_id").type)
             for p in (tmp_path / "out" / "scores").glob("part-*.parquet")}
    assert types == {"string"}


def test_shard_of_other_bands_is_quarantined_before_the_model_reads_it(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_parquet(str(src / "a.parquet"), make_batch(4, seed=5, labels=False))
    write_parquet(str(src / "b.parquet"), make_batch(3, seed=6, start_id=10, labels=False),
                  bands=("i", "r", "g"))
    fio.write_fits(str(src / "c.fits"), make_batch(2, seed=7, start_id=20, labels=False),
                   bands=("z", "y", "N921"))
    table = pq.read_table(src / "a.parquet")  # bands that are not text: that shard alone
    pq.write_table(table.replace_schema_metadata({b"lensscan.bands": b"g,r,\xff"}),
                   src / "d.parquet")
    code, _, err = _score(src, tmp_path / "out")
    assert code == 0, err
    assert "b.parquet: bands i,r,g (metadata lensscan.bands) are not the model's g,r,i" in err
    assert "c.fits: bands z,y,N921 (header BANDS)" in err
    assert "d.parquet: metadata lensscan.bands is not UTF-8 text" in err
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert (m["counts"]["rows_read"], m["counts"]["rows_scored"]) == (13, 4)


@pytest.mark.parametrize("option", [["--threshold", "nan"], ["--threshold", "inf"],
                                    ["--threshold", "7"], ["--top", "-3"],
                                    ["--top", str(2**63)], ["--rows-per-unit", "0"]])
def test_cut_that_selects_nothing_meaningful_is_refused_before_the_output(tmp_path, option,
                                                                         tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    write_parquet(str(src / "a.parquet"), make_batch(4, seed=8))
    code, _, err = _score(src, tmp_path / "out", *option, model=tiny_model)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"lensscan score: error: {option[0]} ")
    assert not (tmp_path / "out").exists()


def test_query_and_gallery_of_an_output_whose_path_holds_glob_characters(tmp_path, tiny_model):
    src, other = tmp_path / "in", tmp_path / "other"
    src.mkdir()
    other.mkdir()
    write_parquet(str(src / "a.parquet"), make_batch(6, seed=9))
    write_parquet(str(other / "a.parquet"), make_batch(6, seed=9, start_id=1000))
    out = tmp_path / "run[1]"
    decoy = tmp_path / "run1"  # what the glob "run[1]" would match instead
    assert _score(other, decoy, "--top", "3", model=tiny_model)[0] == 0
    assert _score(src, out, "--top", "3", model=tiny_model)[0] == 0
    ids = set(pq.read_table(out / "candidates.parquet").column("object_id").to_pylist())
    assert len(ids) == 3 and max(ids) < 1000  # its own candidates, not the decoy's
    code, text, err = _cli("query", str(out), "--top", "6", "--format", "csv")
    assert code == 0, err
    got = [int(line.split(",")[1]) for line in text.strip().splitlines()[1:]]
    assert sorted(got) == list(range(6))
    truth = tmp_path / "t.csv"
    truth.write_text("object_id\n2\n1001\n")
    code, text, err = _cli("query", str(out), "--truth", str(truth), "--top", "6")
    assert code == 0 and "Traceback" not in err, err
    code, _, err = _cli("gallery", str(out), "--out", str(tmp_path / "g.html"), "--top", "3")
    assert code == 0, err


def test_import_npy_refuses_a_folder_with_shards_unless_overwrite(tmp_path):
    src = tmp_path / "npy"
    (src / "test_lenses").mkdir(parents=True)
    for i in range(5):
        np.save(src / "test_lenses" / f"L{i}.npy", np.ones((3, 64, 64), np.float32))
    out = tmp_path / "shards"
    assert _cli("import-npy", str(src), str(out), "--shard-size", "2")[0] == 0
    for i in range(3):
        (src / "test_lenses" / f"L{i}.npy").unlink()
    code, _, err = _cli("import-npy", str(src), str(out))
    assert code == 2 and "already holds 3 shards" in err
    code, text, _ = _cli("import-npy", str(src), str(out), "--overwrite")
    assert code == 0 and json.loads(text)["files"] == 2
    assert len(list(out.glob("*.parquet"))) == 1
    # OUT holding the input: its .npy files would count as shards, and --overwrite remove them
    code, _, err = _cli("import-npy", str(src), str(tmp_path), "--overwrite")
    assert code == 2 and "the input lies inside OUT" in err
    (tmp_path / "link").symlink_to(tmp_path)
    code, _, err = _cli("import-npy", str(src), str(tmp_path / "link"), "--overwrite")
    assert code == 2 and "the input lies inside OUT" in err
    assert len(list((src / "test_lenses").glob("*.npy"))) == 2


def test_member_card_without_checksum_is_a_model_error(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(modelcard.resolve("default"), model)
    member = next(p for p in model.iterdir() if p.is_dir())
    card = json.loads((member / "card.json").read_text())
    card["weights"].pop("sha256")
    (member / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="card has no weights.sha256"):
        modelcard.model_info(str(model))


def test_gpu_sizing_skips_a_corrupt_first_unit(tmp_path):
    good, bad = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    write_parquet(good, make_batch(20, seed=10))
    write_parquet(bad, make_batch(40, seed=11))
    units = plan_units(bad) + plan_units(good)
    data = bytearray((tmp_path / "b.parquet").read_bytes())
    data[200:4000] = b"\xff" * 3800  # pages broken, footer intact
    (tmp_path / "b.parquet").write_bytes(bytes(data))
    assert resources.read_rate(units) > 0  # measured on the good shard
    assert resources.read_rate(units[:1]) is None


def test_a_shard_whose_pages_fail_mid_run_is_reported_not_only_quarantined(tmp_path, tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    write_parquet(str(src / "a.parquet"), make_batch(6, seed=12))
    write_parquet(str(src / "b.parquet"), make_batch(5, seed=13, start_id=50))
    data = bytearray((src / "b.parquet").read_bytes())
    data[200:4000] = b"\xff" * 3800  # pages broken, footer intact: fails when read, not planned
    (src / "b.parquet").write_bytes(bytes(data))
    code, text, err = _score(src, tmp_path / "out", model=tiny_model)
    assert code == 0, err
    assert "unreadable shard" in err and "b.parquet" in err
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert m["counts"]["shards_unreadable"] == 1 and m["counts"]["rows_unreadable"] == 5
    assert m["unreadable_shards"][0]["shard"].endswith("b.parquet")
    assert m["unreadable_shards"][0]["rows"] == 5
    listed = json.loads((tmp_path / "out" / "_quarantine.json").read_text())["shards"]
    assert [s["shard"] for s in listed] == [m["unreadable_shards"][0]["shard"]]
    assert "1 unreadable shards" in text


@pytest.mark.parametrize("scale", [b"0", b"-0.168", b"nan", b"inf"])
def test_a_pixel_scale_that_is_not_a_length_is_refused(tmp_path, scale):
    url = str(tmp_path / "p.parquet")
    write_parquet(url, make_batch(3, seed=14), metadata={b"lensscan.pixel_scale": scale})
    with pytest.raises(ShardError, match="the scale must be a positive number"):
        plan_units(url)


def test_scaled_integer_fits_shard_is_read(tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    b = make_batch(4, seed=15)
    images = np.clip(b["image"], -30, 30)
    hdu = fits.ImageHDU(images, name="CUTOUTS")
    hdu.scale("int16", bscale=0.001)
    objects = fits.BinTableHDU(Table({"OBJECT_ID": b["object_id"]}), name="OBJECTS")
    url = str(tmp_path / "s.fits")
    fits.HDUList([fits.PrimaryHDU(), hdu, objects]).writeto(url)
    got = fio.read_fits(url, 1, 3)
    assert list(got["status"]) == ["ok", "ok"]
    np.testing.assert_allclose(got["image"], images[1:3], atol=6e-4)


def test_exports_name_what_fits_cannot_hold_and_the_terminal_gets_no_escapes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _shard_with(str(src / "a.parquet"), 3,
                object_id=pa.array(["plain", "smile \U0001f600", "\x1b]0;owned\x07 x"]))
    assert _score(src, tmp_path / "out")[0] == 0  # the default model: calibrated, p_lens
    code, _, err = _cli("query", str(tmp_path / "out"), "--format", "fits", "-o",
                        str(tmp_path / "c.fits"))
    assert code == 2 and "column 'object_id' row" in err and "non-ASCII" in err
    assert "Traceback" not in err and '"expected"' not in err  # no summary of a refused export
    code, text, err = _cli("query", str(tmp_path / "out"))
    assert code == 0 and "\x1b" not in text and "\\x1b]0;owned\\x07 x" in text
    assert '"expected"' in err


@pytest.mark.parametrize("option", [["--min-score", "nan"], ["--top", "-1"],
                                    ["--cone", "400", "2", "60"], ["--cone", "150", "2", "inf"],
                                    ["--cone", "150", "-95", "60"], ["--cone", "150", "2", "-5"]])
def test_query_numbers_that_select_nothing_meaningful_are_refused(tmp_path, option, tiny_model):
    src, _ = _scored(tmp_path, tiny_model, 16)
    code, _, err = _cli("query", str(tmp_path / "out"), *option)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"lensscan query: error: {option[0]} ")


def test_an_output_inside_its_input_is_refused(tmp_path, tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    write_parquet(str(src / "a.parquet"), make_batch(4, seed=17))
    for out in (src, src / "run"):
        code, _, err = _score(src, out, model=tiny_model)
        assert code == 2 and "the output lies inside the input" in err
    assert not (src / "run").exists()
    code, _, err = _score(src / "**", src / "run", model=tiny_model)  # descends into run/
    assert code == 2 and "the output lies inside the input" in err
    code, _, err = _score(src / "*" / "*.parquet", src / "run", model=tiny_model)  # run/*.parquet
    assert code == 2 and "the output lies inside the input" in err
    (tmp_path / "link").symlink_to(src)
    code, _, err = _score(src, tmp_path / "link" / "run", model=tiny_model)  # the same folder
    assert code == 2 and "the output lies inside the input" in err
    code, _, err = _score(src / "*.parquet", src / "run", model=tiny_model)  # a glob's files
    assert code == 0, err


def test_an_input_among_the_outputs_own_files_is_refused(tmp_path, tiny_model):
    """Shards in OUT/scores would be deleted by --overwrite; a glob of OUT's own folder would
    score its candidates.parquet as a survey shard."""
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    write_parquet(str(run / "scores" / "a.parquet"), make_batch(4, seed=17))
    for extra in ([], ["--overwrite"]):
        code, _, err = _score(run / "scores", run, *extra, model=tiny_model)
        assert code == 2 and f"the input lies inside {run / 'scores'}, which the run" in err
    assert (run / "scores" / "a.parquet").exists()  # the survey is still there
    g = tmp_path / "g"
    g.mkdir()
    write_parquet(str(g / "a.parquet"), make_batch(4, seed=17))
    code, _, err = _score(g / "*.parquet", g, "--overwrite", model=tiny_model)
    assert code == 2 and "the glob matches the output's own candidates.parquet" in err
    code, _, err = _score(g / "a*.parquet", g, model=tiny_model)  # none of the output's names
    assert code == 0, err


def test_a_part_damaged_after_its_commit_is_one_line_on_the_rerun(tmp_path, tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    write_parquet(str(src / "a.parquet"), make_batch(8, seed=17))
    out = tmp_path / "out"
    assert _score(src, out, model=tiny_model)[0] == 0
    part = next((out / "scores").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:100])
    code, _, err = _score(src, out, model=tiny_model)
    assert code != 0 and "Traceback" not in err
    assert f"{part}: damaged part" in err and "rerun with --overwrite" in err
    assert _score(src, out, "--overwrite", model=tiny_model)[0] == 0


def test_a_copy_quarantined_for_its_input_costs_no_good_copy_its_score(tmp_path, tiny_model):
    """Id 7 twice in one shard, its first copy's pixels overflowing the preprocessing: the
    good copy is scored, not flagged as a repeat of a row that has no score."""
    src = tmp_path / "in"
    src.mkdir()
    b = make_batch(6, seed=17)
    b["object_id"] = np.array([7, 1, 7, 3, 4, 5])
    b["image"][0] = 3e38
    write_parquet(str(src / "a.parquet"), b)
    out = tmp_path / "out"
    code, _, err = _score(src, out, model=tiny_model)
    assert code == 0, err
    rows = pq.read_table(str(out / "scores")).to_pandas().set_index("row").sort_index()
    assert rows.loc[0, "status"].startswith("non_finite_input")
    assert rows.loc[2, "status"] == "ok" and np.isfinite(rows.loc[2, "score"])
    b["object_id"] = np.array([7, 1, 7, 3, 4, 5])
    b["image"][0] = b["image"][1]  # both copies good: the later one is the repeat
    write_parquet(str(src / "a.parquet"), b)
    assert _score(src, tmp_path / "out2", model=tiny_model)[0] == 0
    rows = pq.read_table(str(tmp_path / "out2" / "scores")).to_pandas().set_index("row")
    assert rows.loc[2, "status"].startswith("duplicate_object_id: 7 first seen in")
    assert rows.loc[0, "status"] == "ok"


def test_model_cards_with_unusable_numbers_or_no_members_are_model_errors(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(modelcard.resolve("default"), model)
    card = json.loads((model / "card.json").read_text())
    bad = dict(card, members=[dict(card["members"][0], weight=float("nan"))] + card["members"][1:])
    (model / "card.json").write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="must be finite numbers"):
        modelcard.model_info(str(model))
    (model / "card.json").write_text(json.dumps(dict(card, members=[])))
    with pytest.raises(ModelError, match="lists no members"):
        modelcard.model_info(str(model))
    for key, value, message in [
            ("input", "x", "'input' must be an object, not str"),
            ("bands", 5, "'bands' must be a list, not int"),
            ("calibration", "x", "'calibration' must be an object"),
            ("preprocessing", 5, "'preprocessing' must be an object"),
            ("members", [dict(card["members"][0], path="/etc")], "path '/etc' must be a folder "
             "inside the ensemble's"),
            ("members", [dict(card["members"][0], path="../x")], "path '../x' must be")]:
        (model / "card.json").write_text(json.dumps(dict(card, **{key: value})))
        with pytest.raises(ModelError, match=re.escape(message)):
            modelcard.load_model(str(model))
    (model / "card.json").write_text(json.dumps(dict(card, input=dict(card["input"],
                                                                    shape=[3, 48, 48]))))
    with pytest.raises(ModelError, match=r"input shape is \[3, 48, 48\]; lensscan's cutouts "
                                         r"are \[3, 64, 64\]"):
        modelcard.load_model(str(model))


def test_a_damaged_manifest_is_named(tmp_path, tiny_model):
    src, _ = _scored(tmp_path, tiny_model, 18)
    (tmp_path / "out" / "_manifest.json").write_text("{not json")
    code, _, err = _cli("query", str(tmp_path / "out"), "--format", "fits", "-o",
                        str(tmp_path / "c.fits"))
    assert code == 2 and "_manifest.json: not a valid JSON file" in _last(err)


def _last(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_band_names_are_compared_without_case_or_spaces(tmp_path):
    url = str(tmp_path / "a.parquet")
    write_parquet(url, make_batch(3, seed=19), bands=("G", " R", "I "))
    assert len(plan_units(url, bands=("g", "r", "i"))) == 1
    with pytest.raises(ShardError, match="are not the model's"):
        plan_units(url, bands=("r", "g", "i"))


def test_a_damaged_run_record_is_cleared_by_overwrite(tmp_path, tiny_model):
    src, _ = _scored(tmp_path, tiny_model, 20)
    (tmp_path / "out" / "_run.json").write_text("{torn")
    code, _, err = _score(src, tmp_path / "out", model=tiny_model)
    assert code == 2 and "_run.json: not a valid JSON file" in _last(err)
    code, _, err = _score(src, tmp_path / "out", "--overwrite", model=tiny_model)
    assert code == 0, err


def test_fits_unsigned_ids_beyond_int64_quarantine_their_unit(tmp_path):
    from astropy.io import fits

    col = fits.Column(name="OBJECT_ID", format="K", bzero=2**63,
                      array=np.array([2**63 + 5, 7], dtype=np.uint64))
    url = str(tmp_path / "u.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(make_batch(2)["image"], name="CUTOUTS"),
                  fits.BinTableHDU.from_columns([col], name="OBJECTS")]).writeto(url)
    with pytest.raises(ShardError, match="unsigned ids above 2\\*\\*63 - 1"):
        fio.read_fits(url)


def test_votable_refuses_control_characters_naming_the_row(tmp_path):
    from lensscan.catalog import formats

    table = pa.table({"object_id": ["ok", "bell\x07"], "score": [0.5, 0.4]})
    with pytest.raises(ValueError, match="column 'object_id' row 2 holds control characters"):
        formats.write(table, "votable", str(tmp_path / "t.xml"))
    formats.write(table.slice(0, 1), "votable", str(tmp_path / "t.xml"))


def test_a_step_that_leaves_rows_out_says_how_many_and_why():
    from lensscan.io.batch import skipped_note

    assert skipped_note(np.array(["ok", "ok"], object), "x") is None
    note = skipped_note(np.array(["ok", "unreadable: column 'label' cannot be read (...)",
                                  "unreadable: column 'label' cannot be read (...)",
                                  "null_image"], object), "lensscan train")
    assert note.startswith("lensscan train: 3 of 4 rows left out, not ok (2 unreadable, "
                           "1 null_image; first: unreadable: column 'label'")


def test_inject_counts_and_an_empty_cutout_catalogue_are_refused(tmp_path):
    with pytest.raises(SystemExit) as stop:  # the option's own bound, as argparse refuses
        _cli("inject", str(tmp_path), "--out", str(tmp_path / "t"), "--lenses", "-1",
             "--negatives", "5")
    assert stop.value.code == 2
    code, _, err = _cli("inject", str(tmp_path), "--out", str(tmp_path / "t"), "--lenses", "0",
                        "--negatives", "0")
    assert code == 2 and "--lenses 0 --negatives 0: give counts of 0 or more, not both 0" in \
        _last(err)
    (tmp_path / "cat.csv").write_text("object_id,ra,dec\n")
    code, _, err = _cli("cutout", str(tmp_path / "cat.csv"), str(tmp_path / "{band}.fits"),
                        "--out", str(tmp_path / "s"))
    assert code == 2 and _last(err).endswith("cat.csv: the catalogue has no rows")


@pytest.mark.parametrize("name,content,message", [
    ("t.csv", b"", "t.csv: not a readable table"),
    ("t.csv", b"object_id,ra,dec\n", "t.csv: the truth table has no rows"),
    ("t.csv", b"object_id,ra,dec\n1,abc,2\n", "t.csv: ra and dec must be numbers of degrees"),
    ("t.parquet", b"junk", "t.parquet: not a readable table"),
])
def test_truth_tables_that_cannot_be_used_are_named(tmp_path, name, content, message):
    from lensscan.catalog.truth import read_truth

    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_truth(str(tmp_path / name))


def test_pixels_near_the_float32_limit_are_quarantined_without_a_numpy_warning(tmp_path,
                                                                               tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    b = make_batch(3, seed=5)
    b["image"][1] = 3e38  # the border's two middle values overflow in their mean
    write_parquet(str(src / "a.parquet"), b)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        code, _, err = _score(src, tmp_path / "out", model=tiny_model)
    assert code == 0 and "RuntimeWarning" not in err
    status = list(_parts(tmp_path / "out")["status"])
    assert status[0] == status[2] == "ok" and status[1].startswith("non_finite_input: ")


def test_csv_on_a_terminal_shows_control_characters_and_a_pipe_keeps_them(tmp_path, tiny_model):
    import os
    import subprocess
    import sys

    src = tmp_path / "in"
    src.mkdir()
    _shard_with(str(src / "a.parquet"), 2, object_id=pa.array(["plain", "\x1b]0;owned\x07 x"]))
    assert _score(src, tmp_path / "out", model=tiny_model)[0] == 0
    argv = [sys.executable, "-c", "import sys; from lensscan.cli import main; "
            "sys.exit(main(sys.argv[1:]))", "query", str(tmp_path / "out"), "--format", "csv"]
    leader, follower = os.openpty()  # stdout a terminal, as a user's shell gives it
    try:
        proc = subprocess.run(argv, stdout=follower, stderr=subprocess.PIPE, timeout=120)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in shown and "\x07" not in shown and "\\x1b]0;owned\\x07 x" in shown
    piped = subprocess.run(argv, capture_output=True, timeout=120)  # the data, byte for byte
    assert piped.returncode == 0 and b"\x1b]0;owned\x07 x" in piped.stdout


def test_training_and_evaluation_refuse_shards_of_other_band_order(tmp_path):
    """Every model reads g, r, i in that order: a training or test shard stored i, r, g would
    teach or judge it on swapped bands (only scoring checked them)."""
    from lensscan.data.preprocess import Preprocessing
    from lensscan.train.trainer import dataset

    write_parquet(str(tmp_path / "a.parquet"), make_batch(4, seed=1))
    write_parquet(str(tmp_path / "b.parquet"), make_batch(4, seed=2, start_id=10),
                  bands=("i", "r", "g"))
    with pytest.raises(ShardError, match=r"b\.parquet: bands i,r,g \(metadata lensscan.bands\) "
                                         "are not the model's g,r,i"):
        dataset(str(tmp_path), Preprocessing(), "model")


def test_overwrite_scores_the_same_run_anew_and_repairs_a_damaged_output(tmp_path, tiny_model):
    """--overwrite on an output of the same run used to resume it: nothing was scored, and a
    part damaged by hand ended every later run with a DuckDB traceback."""
    from lensscan.score import fingerprint

    src, out = _scored(tmp_path, tiny_model, 17, n=6)
    part = next((out / "scores").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[:40])  # truncated by hand
    code, _, err = _score(src, out, "--overwrite", model=tiny_model)
    assert code == 0, err
    m = json.loads((out / "_manifest.json").read_text())
    assert m["counts"]["rows_scored"] == 6 and m["counts"]["rows_scored_this_run"] == 6
    # a clear cut short leaves no manifest behind: it is the first thing removed
    assert fingerprint.OUTPUTS[0] == "_manifest.json" and fingerprint.OUTPUTS[-1] == "_run.json"


def test_a_quarantined_copy_of_an_id_does_not_take_a_good_copys_score(tmp_path, tiny_model):
    """Id 7 in a.parquet has NaN pixels, its copy in b.parquet is good; within c.parquet the
    same: the good copy is scored (it used to be flagged a duplicate of the bad one, and the
    object had no score at all)."""
    src = tmp_path / "in"
    src.mkdir()
    a = make_batch(3, seed=1, start_id=6)  # ids 6, 7, 8
    a["image"][1, 0, 10, 10] = np.nan
    write_parquet(str(src / "a.parquet"), a)
    write_parquet(str(src / "b.parquet"), make_batch(2, seed=2, start_id=7))  # ids 7, 8
    c = make_batch(2, seed=3, start_id=20)
    c["object_id"][:] = 20
    c["image"][0, 1, 5, 5] = np.inf
    write_parquet(str(src / "c.parquet"), c)
    code, _, err = _score(src, tmp_path / "out", model=tiny_model)
    assert code == 0, err
    df = _parts(tmp_path / "out")
    got = {(s.rsplit("/", 1)[-1], r): st.split(":")[0]
           for s, r, st in zip(df["shard"], df["row"], df["status"], strict=True)}
    assert got == {("a.parquet", 0): "ok", ("a.parquet", 1): "non_finite_pixels",
                   ("a.parquet", 2): "ok", ("b.parquet", 0): "ok",
                   ("b.parquet", 1): "duplicate_object_id", ("c.parquet", 0): "non_finite_pixels",
                   ("c.parquet", 1): "ok"}


def test_a_model_whose_weights_fail_leaves_the_output_unclaimed(tmp_path, tiny_model):
    """Weights that cannot load (truncated) fail the run in one line before any unit is
    committed; the folder is not left claimed for that model, so another scores into it at
    once, without --overwrite."""
    src = tmp_path / "in"
    src.mkdir()
    write_parquet(str(src / "a.parquet"), make_batch(8, seed=17))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = next(broken.glob("*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:64])
    out = tmp_path / "out"
    code, _, err = _score(src, out, model=str(broken))
    assert code == 2 and "Traceback" not in err and "model.safetensors" in err
    assert not (out / "_run.json").exists()
    code, _, err = _score(src, out, model=tiny_model)
    assert code == 0, err

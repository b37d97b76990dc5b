"""The gallery rendered for real in headless Chromium: images, ids, paging, keyboard grading."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest
from support import CHROMEDRIVER, CHROMIUM, downloaded, finish_output, make_batch
from support import chromium as _chromium

from lensscan.catalog.gallery import write_gallery
from lensscan.cli import main
from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.io.parquet import flux_metadata, write_parquet
from lensscan.score import commit

ORDER = ["object_id", "ra", "dec", "score", "score_m0", "shard", "row", "status"]


def _run(tmp_path, n=130, ids=None, threshold=None, pixel_scale=None):
    """Shards plus a scoring output that points at them (scores = a known function of id);
    ``threshold`` goes into the manifest, ``pixel_scale`` into the shard's metadata."""
    shard = str(tmp_path / "in" / "p.parquet")
    batch = make_batch(n, seed=4)
    if ids is not None:
        batch["object_id"] = np.array(ids, dtype=object)
    meta = flux_metadata(pixel_scale, 27.0) if pixel_scale else None
    write_parquet(shard, batch, row_group_size=32, metadata=meta)
    out = str(tmp_path / "out")
    score = (np.arange(n)[::-1] / n).astype(np.float32)  # id 0 is the best
    rows = {"object_id": batch["object_id"], "ra": batch["ra"], "dec": batch["dec"],
            "score": score, "score_m0": score, "shard": np.full(n, shard, dtype=object),
            "row": np.arange(n), "status": np.full(n, "ok", dtype=object)}
    commit.write_unit(out, "u0", rows, ORDER)
    commit.finalize(out, ["u0"], 0.5, None)
    finish_output(out, [shard])
    if threshold is not None:
        commit.write_json(storage.join(out, commit.MANIFEST), {"threshold": threshold})
    return out, batch


def test_gallery_pixels_come_from_provenance(tmp_path):
    from lensscan.catalog.gallery import cutouts_for
    from lensscan.catalog.query import query

    out, batch = _run(tmp_path)
    t = query(out, top=40)
    imgs = cutouts_for(t)
    np.testing.assert_array_equal(imgs, batch["image"][t.column("row").to_numpy()])


def test_png_mosaic_option(tmp_path):
    import matplotlib.image as mpimg

    out, _ = _run(tmp_path)
    png = write_gallery(out, str(tmp_path / "top.png"), top=25)
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 800  # 3 rows of 10


def test_changed_shard_refused_by_name(tmp_path, capsys):
    """A shard rewritten after scoring (shorter, or the same size with other objects) is
    refused by name: its rows are no longer the scored objects."""
    out, _ = _run(tmp_path, n=64)
    shard = str(tmp_path / "in" / "p.parquet")
    page = str(tmp_path / "g.html")
    write_parquet(shard, make_batch(64, seed=99), row_group_size=32)  # same size, others
    with pytest.raises(OutputError, match=rf"{shard}: changed since .* was scored"):
        write_gallery(out, page, top=10)
    write_parquet(shard, make_batch(20, seed=5), row_group_size=32)  # shorter
    assert main(["gallery", out, "--out", page, "--top", "40"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lensscan gallery: error: {shard}: changed")
    assert not os.path.exists(page)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium not installed")
def test_ids_are_shown_as_text_never_run(tmp_path):
    """Ids are user data: markup in an id is shown literally, never parsed (an id of
    `<img src=x onerror=...>` ran its script)."""
    from selenium.webdriver.common.by import By

    ids = ['<img src=x onerror="window.__xss = 1">', '"><script>window.__xss = 2</script>',
           "<b class=injected>bold</b>", "</script><script>window.__xss = 3</script>"]
    out, _ = _run(tmp_path, n=len(ids), ids=ids)
    page = str(tmp_path / "gallery.html")
    write_gallery(out, page, top=10)
    driver = _chromium(tmp_path)
    try:
        driver.get("file://" + os.path.abspath(page))
        assert len(driver.find_elements(By.CSS_SELECTOR, ".card")) == len(ids)
        assert driver.execute_script("return window.__xss") is None
        assert not driver.find_elements(By.CSS_SELECTOR, 'img[src="x"], .injected, .card script')
        shown = [e.get_attribute("textContent") for e in driver.find_elements(By.CSS_SELECTOR,
                                                                               ".oid")]
        assert shown == ids  # rank order is id order here (score falls with the row)
        alts = [e.get_attribute("alt") for e in driver.find_elements(By.CSS_SELECTOR,
                                                                      ".card img")]
        assert alts == ids
    finally:
        driver.quit()


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium not installed")
def test_gallery_in_headless_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out, _ = _run(tmp_path)
    page = str(tmp_path / "gallery.html")
    write_gallery(out, page, top=120, per_page=50)
    driver = _chromium(tmp_path)
    try:
        driver.get("file://" + os.path.abspath(page))
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert len(cards) == 50  # first page
        imgs = driver.find_elements(By.CSS_SELECTOR, ".card img")
        assert all(i.get_attribute("src").startswith("data:image/png;base64,") for i in imgs)
        loaded = driver.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0)"
            ".length")
        assert loaded >= 40
        ids = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".oid")]
        assert ids[:3] == ["0", "1", "2"]  # sorted by rank
        assert "page 1/3" in driver.find_element(By.ID, "pageinfo").text
        driver.save_screenshot(str(tmp_path / "gallery.png"))
        assert (tmp_path / "gallery.png").stat().st_size > 10_000
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("a")  # object 0 -> A, focus moves to 1
        body.send_keys("n")  # object 1 -> not a lens
        body.send_keys(Keys.ARROW_RIGHT)  # skip object 2
        body.send_keys("c")  # object 3 -> C
        body.send_keys("]")  # next page
        assert "page 2/3" in driver.find_element(By.ID, "pageinfo").text
        assert driver.find_elements(By.CSS_SELECTOR, ".oid")[0].text == "50"
        body.send_keys("b")  # object 50 -> B
        text = driver.execute_script("return exportCsv()")
        graded = {r["object_id"]: r["grade"] for r in csv.DictReader(io.StringIO(text))}
        assert graded == {"0": "A", "1": "not a lens", "3": "C", "50": "B"}
    finally:
        driver.quit()


def test_placeholders_in_the_title_stay_text(tmp_path):
    """The page's title holds the output's path: a folder named like the page's placeholders
    is shown as named, and the data and script go in once, where they belong."""
    base = tmp_path / "${SCRIPT} $DATA __DATA__ <i>"
    base.mkdir()
    out, _ = _run(base, n=4)
    page = tmp_path / "g.html"
    write_gallery(out, str(page), top=4)
    doc = page.read_text()
    assert doc.count("function render()") == 1 and doc.count("const ITEMS = [") == 1
    assert f"<title>lensscan candidates: {base}".replace("<i>", "&lt;i&gt;") in doc


def test_viewer_templates_checked(tmp_path, capsys):
    from lensscan.catalog.gallery import check_viewer, viewer_url

    good = "https://www.legacysurvey.org/viewer?ra={ra}&dec={dec}&zoom=16&layer=hsc-dr3"
    assert check_viewer(good) == good
    assert viewer_url(good, 150.1, -2.5) == ("https://www.legacysurvey.org/viewer?ra=150.100000"
                                             "&dec=-2.500000&zoom=16&layer=hsc-dr3")
    assert viewer_url(good, None, 1.0) is None
    assert "ra=0.000000&" in viewer_url(good, 359.99999999, 1.0)  # not RA 360, off the sky
    out, _ = _run(tmp_path, n=8)
    page = str(tmp_path / "g.html")
    for bad, why in (("javascript:alert(1)//{ra}{dec}", "http:// or https://"),
                     ("file:///etc/passwd?{ra}{dec}", "http:// or https://"),
                     ("https://x.org/?ra={ra}", "no {dec}"),
                     ("https://x.org/?ra={ra}&dec={dec}&q=a b", "spaces")):
        assert main(["gallery", out, "--out", page, "--viewer", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
        assert not os.path.exists(page)


def test_scale_bar_and_stretches():
    from lensscan.catalog.gallery import scale_bar
    from lensscan.catalog.stretch import STRETCHES, band_grey, render

    assert scale_bar(0.168) == {"arcsec": 2, "percent": round(100 * 2 / (0.168 * 64), 3)}
    assert scale_bar(0.6)["arcsec"] == 10  # 38.4" wide
    image = make_batch(1, seed=1)["image"][0]
    image[1, 10:14, 10:14] += 50.0  # a knot in r only
    shown = {k: render(image, k) for k in STRETCHES}
    assert shown["asinh"].shape == shown["contrast"].shape == (64, 64, 3)
    assert all(shown[b].shape == (64, 64) for b in "gri")
    assert shown["r"][11, 11] >= 250 and shown["g"][11, 11] < 200  # the knot is r only
    np.testing.assert_array_equal(shown["i"], band_grey(image, 2))
    # high contrast brings out what the composite leaves dark
    faint = (shown["asinh"].max(axis=-1) < 40) & (shown["contrast"].max(axis=-1) > 80)
    assert faint.sum() > 20


def _check_stamps_and_links(driver, batch) -> None:
    """Scale bar from the shard's 0.2"/px (2" of a 12.8" cutout), N up and E left on every
    card, the IAU name and the viewer link of the first card."""
    from selenium.webdriver.common.by import By

    from lensscan.catalog.names import iau_names

    cards = driver.find_elements(By.CSS_SELECTOR, ".card")
    assert len(cards) == 100
    bar = cards[0].find_element(By.CSS_SELECTOR, ".scalebar")
    assert bar.get_attribute("data-arcsec") == "2" and bar.text == "2\u2033"
    img_w = cards[0].find_element(By.CSS_SELECTOR, ".stamp img").size["width"]
    assert abs(bar.size["width"] - img_w * 2 / 12.8) <= 2
    assert len(driver.find_elements(By.CSS_SELECTOR, ".card svg.compass")) == 100
    assert [t.text for t in cards[0].find_elements(By.CSS_SELECTOR, ".compass text")] == [
        "N", "E"]
    ra, dec = batch["ra"][0], batch["dec"][0]
    assert cards[0].find_element(By.CSS_SELECTOR, ".name").text == iau_names([ra], [dec])[0]
    link = cards[0].find_element(By.CSS_SELECTOR, "a.viewer")
    assert link.get_attribute("href") == (f"https://viewer.example.org/view?ra={ra:.6f}"
                                          f"&dec={dec:.6f}&zoom=15")
    assert link.get_attribute("rel") == "noopener noreferrer"


def _check_threshold_marker(driver) -> None:
    """One marker, between id 64 (score 65/130 = 0.5, the threshold) and id 65."""
    from selenium.webdriver.common.by import By

    marks = driver.find_elements(By.CSS_SELECTOR, "#grid > .threshold")
    assert len(marks) == 1
    before = driver.execute_script("return arguments[0].previousElementSibling", marks[0])
    after = driver.execute_script("return arguments[0].nextElementSibling", marks[0])
    assert before.get_attribute("data-object-id") == "64"
    assert after.get_attribute("data-object-id") == "65"
    assert float(before.get_attribute("data-score")) >= 0.5 > float(
        after.get_attribute("data-score"))


def _check_stretches(driver) -> None:
    """The select and the s key swap every image for another stretch."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def first():
        return driver.find_elements(By.CSS_SELECTOR, ".card .stamp img")[0]

    src0 = first().get_attribute("src")
    select = Select(driver.find_element(By.ID, "stretch"))
    assert [o.get_attribute("value") for o in select.options] == [
        "asinh", "g", "r", "i", "contrast"]
    select.select_by_value("contrast")
    imgs = driver.find_elements(By.CSS_SELECTOR, ".card .stamp img")
    assert {i.get_attribute("data-stretch") for i in imgs} == {"contrast"}
    assert first().get_attribute("src") != src0
    assert first().get_attribute("src").startswith("data:image/png;base64,")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("s")  # wraps round to the composite
    assert first().get_attribute("src") == src0
    body.send_keys("s")
    assert first().get_attribute("data-stretch") == "g"


def _check_larger_view(driver, shot) -> None:
    """A click on a stamp opens it larger, with its own scale bar; Escape closes it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    stamps = driver.find_elements(By.CSS_SELECTOR, ".card .stamp")
    small = stamps[2].find_element(By.TAG_NAME, "img").size["width"]
    stamps[2].click()
    zoom = driver.find_element(By.ID, "zoom")
    assert zoom.is_displayed()
    assert zoom.find_element(By.CSS_SELECTOR, ".stamp img").size["width"] >= 3 * small
    assert zoom.find_element(By.CSS_SELECTOR, ".oid").text == "2"
    assert zoom.find_element(By.CSS_SELECTOR, ".scalebar").get_attribute("data-arcsec") == "2"
    driver.save_screenshot(str(shot))
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    assert not zoom.is_displayed()


def _grade_and_export(driver, downloads, name: str) -> str:
    """Type a grader's name (not taken as grades), grade objects 2 and 3 (focused by the
    click), export with the button; returns the downloaded CSV."""

    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "grader").send_keys(name)
    assert "0 graded" in driver.find_element(By.ID, "pageinfo").text
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("a")  # object 2 -> A
    body.send_keys("n")  # object 3 -> not a lens
    driver.find_element(By.ID, "export").click()
    return downloaded(downloads / "grades.csv")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium not installed")
def test_gallery_views_threshold_viewer_and_export(tmp_path):
    """Scale bar and compass, the stretch switch, the larger view, the threshold marker, the
    viewer link and the export's grader, time and score, in headless Chromium."""
    import datetime

    from lensscan.data.grades import read_grades

    out, batch = _run(tmp_path, threshold=0.5, pixel_scale=0.2)
    page = str(tmp_path / "gallery.html")
    viewer = "https://viewer.example.org/view?ra={ra}&dec={dec}&zoom=15"
    assert main(["gallery", out, "--out", page, "--top", "120", "--viewer", viewer]) == 0
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    name = "Ann O'Neil, \"AO\""
    driver = _chromium(tmp_path, downloads)
    try:
        driver.get("file://" + os.path.abspath(page))
        _check_stamps_and_links(driver, batch)
        _check_threshold_marker(driver)
        _check_stretches(driver)
        _check_larger_view(driver, tmp_path / "zoom.png")
        t0 = datetime.datetime.now(datetime.UTC)
        text = _grade_and_export(driver, downloads, name)
    finally:
        driver.quit()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == "object_id,grade,grader,time,score"
    assert [(r["object_id"], r["grade"], r["grader"]) for r in rows] == [
        ("2", "A", name), ("3", "not a lens", name)]
    for r in rows:
        when = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
        assert r["time"].endswith("Z") and t0 - datetime.timedelta(seconds=5) <= when
        assert float(r["score"]) == pytest.approx((129 - int(r["object_id"])) / 130, rel=1e-6)
    g = read_grades(str(downloads / "grades.csv"))  # the export reads back as grades
    assert list(g["grader"]) == [name] * 2 and list(g["value"]) == [3, 0]


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium not installed")
def test_grades_are_kept_per_run_and_any_id_is_a_plain_key(tmp_path):
    """Ids such as "constructor" are not inherited properties of the grades (they exported a
    grade "undefined"), "__proto__" is graded like any id, and a later run scored into the same
    folder (same page title, ids repeated) starts without the earlier run's grades."""
    import shutil

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ids = ["constructor", "toString", "__proto__", "42"]
    out, _ = _run(tmp_path, n=len(ids), ids=ids)
    page = str(tmp_path / "gallery.html")
    write_gallery(out, page, top=10)
    driver = _chromium(tmp_path)

    def exported() -> dict:
        text = driver.execute_script("return exportCsv()")
        return {r["object_id"]: r["grade"] for r in csv.DictReader(io.StringIO(text))}

    try:
        driver.get("file://" + page)
        assert exported() == {}
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, "a", "n")  # __proto__: A, 42: not
        assert exported() == {"__proto__": "A", "42": "not a lens"}
        driver.refresh()
        assert exported() == {"__proto__": "A", "42": "not a lens"}  # kept, both
        # the same run, fewer candidates: no grade is lost. Headless Chromium at times opens a
        # later file:// page with an empty localStorage (no key at all, a browser's store, not
        # the page's), so the page's store is carried over by hand before it is reloaded
        kept = driver.execute_script("return localStorage.getItem(STORE)")
        page = str(tmp_path / "gallery-top1.html")
        write_gallery(out, page, top=1)
        driver.get("file://" + page)
        for _ in range(5):  # until the browser keeps the store over a reload (it loses it at
            driver.execute_script("localStorage.setItem(STORE, arguments[0])", kept)  # times)
            driver.refresh()
            if driver.execute_script("return localStorage.getItem(STORE)") == kept:
                break
        assert exported() == {"__proto__": "A", "42": "not a lens"}
        assert "1 candidates \u00b7 2 graded" in driver.find_element(By.ID, "pageinfo").text
        shutil.rmtree(tmp_path / "out")
        shutil.rmtree(tmp_path / "in")
        out, _ = _run(tmp_path, n=len(ids), ids=ids[::-1])  # another run, the same folder
        write_gallery(out, page, top=10)
        driver.get("file://" + page)
        assert exported() == {}
    finally:
        driver.quit()


def test_a_cut_that_selects_nothing_is_refused_not_an_empty_page(tmp_path, capsys):
    out, _ = _run(tmp_path, n=5)
    page = str(tmp_path / "g.html")
    assert main(["gallery", out, "--out", page, "--min-score", "2"]) == 2
    assert "no scored object to show (--top 100, --min-score 2)" in capsys.readouterr().err
    assert main(["gallery", out, "--out", page, "--top", "0"]) == 2
    assert not os.path.exists(page)

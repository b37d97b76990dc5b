"""The gallery rendered for real in headless Chromium: images, ids, paging, keyboard grading."""

from __future__ import annotations

import csv
import io
import os
import shutil

import numpy as np
import pytest
from conftest import finish_output, make_batch

from lensscan.catalog.gallery import write_gallery
from lensscan.cli import main
from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.io.parquet import flux_metadata, write_parquet
from lensscan.score import commit

ORDER = ["object_id", "ra", "dec", "score", "score_m0", "shard", "row", "status"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


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


def _chromium(tmp_path, downloads=None):
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


def test_viewer_templates_checked(tmp_path, capsys):
    from lensscan.catalog.gallery import check_viewer, viewer_url

    good = "https://www.legacysurvey.org/viewer?ra={ra}&dec={dec}&zoom=16&layer=hsc-dr3"
    assert check_viewer(good) == good
    assert viewer_url(good, 150.1, -2.5) == ("https://www.legacysurvey.org/viewer?ra=150.100000"
                                             "&dec=-2.500000&zoom=16&layer=hsc-dr3")
    assert viewer_url(good, None, 1.0) is None
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


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium not installed")
def test_gallery_views_threshold_viewer_and_export(tmp_path):
    """Scale bar and compass, the stretch switch, the larger view, the threshold marker, the
    viewer link and the export's grader, time and score, in headless Chromium."""
    import datetime

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from lensscan.catalog.names import iau_names

    out, batch = _run(tmp_path, threshold=0.5, pixel_scale=0.2)
    page = str(tmp_path / "gallery.html")
    viewer = "https://viewer.example.org/view?ra={ra}&dec={dec}&zoom=15"
    assert main(["gallery", out, "--out", page, "--top", "120", "--viewer", viewer]) == 0
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _chromium(tmp_path, downloads)
    css = driver.find_elements
    try:
        driver.get("file://" + os.path.abspath(page))
        cards = css(By.CSS_SELECTOR, ".card")
        assert len(cards) == 100
        # scale bar from the shard's 0.2"/px: 2" of a 12.8" cutout; N up, E left on every card
        bar = cards[0].find_element(By.CSS_SELECTOR, ".scalebar")
        assert bar.get_attribute("data-arcsec") == "2" and bar.text == "2\u2033"
        img_w = cards[0].find_element(By.CSS_SELECTOR, ".stamp img").size["width"]
        assert abs(bar.size["width"] - img_w * 2 / 12.8) <= 2
        assert len(css(By.CSS_SELECTOR, ".card svg.compass")) == 100
        assert [t.text for t in cards[0].find_elements(By.CSS_SELECTOR, ".compass text")] == [
            "N", "E"]
        # names and viewer links
        ra, dec = batch["ra"][0], batch["dec"][0]
        assert cards[0].find_element(By.CSS_SELECTOR, ".name").text == iau_names([ra], [dec])[0]
        link = cards[0].find_element(By.CSS_SELECTOR, "a.viewer")
        assert link.get_attribute("href") == (f"https://viewer.example.org/view?ra={ra:.6f}"
                                              f"&dec={dec:.6f}&zoom=15")
        assert link.get_attribute("rel") == "noopener noreferrer"
        # the threshold marker sits between id 64 (score 65/130 = 0.5) and id 65
        marks = css(By.CSS_SELECTOR, "#grid > .threshold")
        assert len(marks) == 1
        before = driver.execute_script("return arguments[0].previousElementSibling", marks[0])
        after = driver.execute_script("return arguments[0].nextElementSibling", marks[0])
        assert before.get_attribute("data-object-id") == "64"
        assert after.get_attribute("data-object-id") == "65"
        assert float(before.get_attribute("data-score")) >= 0.5 > float(
            after.get_attribute("data-score"))
        # stretches: the select and the s key swap every image
        src0 = cards[0].find_element(By.CSS_SELECTOR, ".stamp img").get_attribute("src")
        select = Select(driver.find_element(By.ID, "stretch"))
        assert [o.get_attribute("value") for o in select.options] == [
            "asinh", "g", "r", "i", "contrast"]
        select.select_by_value("contrast")
        imgs = css(By.CSS_SELECTOR, ".card .stamp img")
        assert {i.get_attribute("data-stretch") for i in imgs} == {"contrast"}
        src1 = imgs[0].get_attribute("src")
        assert src1 != src0 and src1.startswith("data:image/png;base64,")
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("s")  # wraps round to the composite
        assert css(By.CSS_SELECTOR, ".card .stamp img")[0].get_attribute("src") == src0
        body.send_keys("s")
        assert css(By.CSS_SELECTOR, ".card .stamp img")[0].get_attribute("data-stretch") == "g"
        # click: a larger view with its own scale bar; Escape closes it
        css(By.CSS_SELECTOR, ".card .stamp")[2].click()
        zoom = driver.find_element(By.ID, "zoom")
        assert zoom.is_displayed()
        big = zoom.find_element(By.CSS_SELECTOR, ".stamp img")
        assert big.size["width"] >= 3 * img_w
        assert zoom.find_element(By.CSS_SELECTOR, ".oid").text == "2"
        assert zoom.find_element(By.CSS_SELECTOR, ".scalebar").get_attribute("data-arcsec") == "2"
        driver.save_screenshot(str(tmp_path / "zoom.png"))
        body.send_keys(Keys.ESCAPE)
        assert not zoom.is_displayed()
        # the grader's name is typed, not taken as grades
        grader = driver.find_element(By.ID, "grader")
        grader.send_keys("Ann O'Neil, \"AO\"")
        assert "0 graded" in driver.find_element(By.ID, "pageinfo").text
        t0 = datetime.datetime.now(datetime.UTC)
        body.send_keys("a")  # object 2 (focused by the click) -> A
        body.send_keys("n")  # object 3 -> not a lens
        driver.save_screenshot(str(tmp_path / "gallery.png"))
        driver.find_element(By.ID, "export").click()
        csv_path = downloads / "grades.csv"
        for _ in range(100):
            if csv_path.exists() and csv_path.stat().st_size:
                break
            import time

            time.sleep(0.1)
        text = csv_path.read_text()
    finally:
        driver.quit()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == "object_id,grade,grader,time,score"
    assert [(r["object_id"], r["grade"], r["grader"]) for r in rows] == [
        ("2", "A", "Ann O'Neil, \"AO\""), ("3", "not a lens", "Ann O'Neil, \"AO\"")]
    for r in rows:
        when = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
        assert r["time"].endswith("Z") and t0 - datetime.timedelta(seconds=5) <= when
        assert float(r["score"]) == pytest.approx((129 - int(r["object_id"])) / 130, rel=1e-6)
    # the export reads back as grades (lensscan.data.grades)
    from lensscan.data.grades import read_grades

    g = read_grades(str(csv_path))
    assert list(g["grader"]) == ["Ann O'Neil, \"AO\""] * 2 and list(g["value"]) == [3, 0]

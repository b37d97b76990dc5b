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
from lensscan.io.parquet import write_parquet
from lensscan.score import commit

ORDER = ["object_id", "ra", "dec", "score", "score_m0", "shard", "row", "status"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _run(tmp_path, n=130, ids=None):
    """Shards plus a scoring output that points at them (scores = a known function of id)."""
    shard = str(tmp_path / "in" / "p.parquet")
    batch = make_batch(n, seed=4)
    if ids is not None:
        batch["object_id"] = np.array(ids, dtype=object)
    write_parquet(shard, batch, row_group_size=32)
    out = str(tmp_path / "out")
    score = (np.arange(n)[::-1] / n).astype(np.float32)  # id 0 is the best
    rows = {"object_id": batch["object_id"], "ra": batch["ra"], "dec": batch["dec"],
            "score": score, "score_m0": score, "shard": np.full(n, shard, dtype=object),
            "row": np.arange(n), "status": np.full(n, "ok", dtype=object)}
    commit.write_unit(out, "u0", rows, ORDER)
    commit.finalize(out, ["u0"], 0.5, None)
    finish_output(out, [shard])
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


def _chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
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

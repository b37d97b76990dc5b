"""DeepLense .npy layout import: counts, ids, labels, splits, bounded memory, bad files."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from lensscan.errors import ShardError
from lensscan.io.npy import import_npy
from lensscan.io.parquet import read_parquet
from lensscan.io.storage import list_shards

COUNTS = {"train_lenses": 150, "train_nonlenses": 1450, "test_lenses": 40, "test_nonlenses": 360}


def _layout(root, counts, seed=0):
    rng = np.random.default_rng(seed)
    for folder, n in counts.items():
        (root / folder).mkdir(parents=True)
        prefix = "L" if folder.endswith("_lenses") else "N"
        for i in range(n):
            np.save(root / folder / f"{prefix}{i:06d}.npy",
                    rng.normal(1, 0.1, (3, 64, 64)).astype(np.float32))


@pytest.fixture(scope="module")
def deeplense(tmp_path_factory):
    root = tmp_path_factory.mktemp("deeplense")
    _layout(root, COUNTS)
    return root


def test_import_counts_ids_labels_splits(deeplense, tmp_path):
    out = tmp_path / "out"
    counts = import_npy(str(deeplense), str(out), shard_size=512, progress=False)
    assert counts["files"] == 2000 and counts["shards"] == 4
    assert {k: counts[k] for k in COUNTS} == COUNTS
    rows = [read_parquet(u) for u in list_shards(str(out))]
    ids = np.concatenate([r["object_id"] for r in rows])
    labels = np.concatenate([r["label"] for r in rows])
    splits = np.concatenate([r["split"] for r in rows])
    assert len(set(ids)) == 2000
    assert "test_lenses/L000039" in set(ids) and "train_nonlenses/N001449" in set(ids)
    for folder, n in COUNTS.items():
        mine = np.array([i.startswith(folder + "/") for i in ids])
        assert mine.sum() == n
        assert (labels[mine] == (1 if folder.endswith("_lenses") else 0)).all()
        assert (splits[mine] == folder.split("_")[0]).all()
    first = next(r for r in rows if "test_lenses/L000000" in set(r["object_id"]))
    j = list(first["object_id"]).index("test_lenses/L000000")
    expected = np.load(deeplense / "test_lenses" / "L000000.npy")
    np.testing.assert_array_equal(first["image"][j], expected)


def test_files_in_subfolders_keep_their_path_in_the_id(tmp_path):
    """Two files of one name in two subfolders, and the same name in another DeepLense folder:
    three ids (the subfolder used to be taken for the DeepLense folder: a/x, b/x)."""
    image = np.ones((3, 64, 64), np.float32)
    for rel in ("train_lenses/a/x.npy", "train_lenses/b/x.npy", "test_lenses/x.npy"):
        (tmp_path / "dl" / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "dl" / rel, image)
    import_npy(str(tmp_path / "dl"), str(tmp_path / "out"), progress=False)
    ids = np.concatenate([read_parquet(u)["object_id"] for u in list_shards(str(tmp_path / "out"))])
    assert sorted(ids) == ["test_lenses/x", "train_lenses/a/x", "train_lenses/b/x"]


def test_peak_memory_independent_of_file_count(tmp_path):
    peaks = []
    for n in (300, 1500):
        root = tmp_path / f"d{n}"
        _layout(root, {"train_lenses": n // 10, "train_nonlenses": n - n // 10}, seed=n)
        tracemalloc.start()
        import_npy(str(root), str(tmp_path / f"o{n}"), shard_size=100, progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # one shard of 100 cutouts is ~5 MB; 5x more files must not raise the peak noticeably
    assert peaks[1] < 1.3 * peaks[0], peaks
    assert peaks[1] < 40e6, peaks


def test_bad_file_named_or_skipped(tmp_path):
    root = tmp_path / "d"
    _layout(root, {"test_lenses": 3})
    np.save(root / "test_lenses" / "L999999.npy", np.zeros((4, 64, 64), np.float32))
    (root / "test_lenses" / "L888888.npy").write_bytes(b"garbage")
    with pytest.raises(ShardError, match=r"L888888\.npy: not a readable \.npy array"):
        import_npy(str(root), str(tmp_path / "o"), progress=False)
    skipped = []
    counts = import_npy(str(root), str(tmp_path / "o2"), progress=False, on_error=skipped.append)
    assert counts["files"] == 3 and counts["skipped"] == 2
    assert any("L999999.npy: array has shape (4, 64, 64)" in str(e) for e in skipped)


def test_missing_layout_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="none of the DeepLense folders"):
        import_npy(str(tmp_path), str(tmp_path / "o"), progress=False)
    with pytest.raises(FileNotFoundError, match=r"nosuch: no such folder$"):
        import_npy(str(tmp_path / "nosuch"), str(tmp_path / "o"), progress=False)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"f\.txt: not a folder$"):
        import_npy(str(tmp_path / "f.txt"), str(tmp_path / "o"), progress=False)


def test_a_link_loop_is_one_named_file_that_can_be_skipped(tmp_path):
    """Two .npy links to each other stopped the whole import, even with --skip-bad."""
    root = tmp_path / "d"
    _layout(root, {"test_nonlenses": 2})
    folder = root / "test_nonlenses"
    (folder / "a.npy").symlink_to(folder / "b.npy")
    (folder / "b.npy").symlink_to(folder / "a.npy")
    with pytest.raises(ShardError, match=r"a\.npy: cannot be read \(Too many levels of symbolic"):
        import_npy(str(root), str(tmp_path / "o"), progress=False)
    skipped = []
    counts = import_npy(str(root), str(tmp_path / "o2"), progress=False, on_error=skipped.append)
    assert counts["test_nonlenses"] == 2 and counts["skipped"] == 2 and len(skipped) == 2


def test_an_import_that_reads_nothing_fails_and_overflowing_pixels_are_named(tmp_path):
    from lensscan.errors import NothingReadableError

    root = tmp_path / "d"
    (root / "test_lenses").mkdir(parents=True)
    with pytest.raises(NothingReadableError, match="no readable .npy file in test_lenses"):
        import_npy(str(root), str(tmp_path / "o"), progress=False)
    big = np.full((3, 64, 64), 1e300)  # float64 beyond float32: inf once cast
    np.save(root / "test_lenses" / "big.npy", big)
    with pytest.raises(ShardError, match=r"big\.npy: pixel values beyond float32's range"):
        import_npy(str(root), str(tmp_path / "o"), progress=False)
    with pytest.raises(NothingReadableError, match=r"\(1 skipped as unreadable\)"):
        import_npy(str(root), str(tmp_path / "o"), progress=False, on_error=lambda e: None)


def test_archives_huge_headers_and_undecodable_names_are_named_and_skipped(tmp_path):
    """An .npz archive named .npy, a header claiming an exabyte array (read before any pixel is)
    and a file name that is not UTF-8 each end as one named, skippable error."""
    import os

    root = tmp_path / "d"
    _layout(root, {"test_lenses": 2})
    folder = root / "test_lenses"
    np.savez(folder / "Z1.npz", a=np.zeros((3, 64, 64), np.float32))
    os.rename(folder / "Z1.npz", folder / "Z1.npy")
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, 10**9)}
    with open(folder / "H1.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
    os.close(os.open(os.path.join(os.fsencode(folder), b"U\xff1.npy"), os.O_CREAT | os.O_WRONLY))
    skipped = []
    counts = import_npy(str(root), str(tmp_path / "o"), progress=False, on_error=skipped.append)
    assert counts["files"] == 2 and counts["skipped"] == 3
    text = sorted(str(e) for e in skipped)
    assert "H1.npy: array has shape (1000000000, 1000000000)" in text[0]
    assert "file name is not UTF-8 text" in text[1]
    assert "Z1.npy: not a readable .npy array" in text[2]


def test_headers_are_checked_before_the_pixels_are_fetched(tmp_path):
    """A stacked file (a header of 8,000 cutouts, 393 MB, sparse here) is refused after its
    header alone; a truncated one says so."""
    from lensscan.io.npy import load_npy

    stack = tmp_path / "stack.npy"
    with open(stack, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (8000, 3, 64, 64)})
        fh.truncate(fh.tell() + 8000 * 3 * 64 * 64 * 4)
    tracemalloc.start()
    with pytest.raises(ShardError, match=r"stack\.npy: array has shape \(8000, 3, 64, 64\)"):
        load_npy(str(stack))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000, peak  # the header's bytes, not the file's 393 MB
    np.save(tmp_path / "cut.npy", np.ones((3, 64, 64), np.float32))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-100])
    with pytest.raises(ShardError, match=r"cut\.npy: truncated: \d+ bytes, the header's array "
                                         r"needs \d+"):
        load_npy(str(tmp_path / "cut.npy"))


def test_a_failed_import_leaves_no_shard_and_other_entries_are_told(tmp_path):
    root = tmp_path / "d"
    _layout(root, {"train_lenses": 3})
    folder = root / "train_lenses"
    (folder / "UP.NPY").write_bytes(b"x")
    (folder / "q.npz").write_bytes(b"x")
    (tmp_path / "store").mkdir()
    (folder / "batch1").symlink_to(tmp_path / "store")
    notes = []
    counts = import_npy(str(root), str(tmp_path / "o"), shard_size=1, progress=False,
                        on_note=notes.append)
    assert counts["files"] == 3 and counts["passed_over"] == 3
    assert len(notes) == 1 and notes[0].startswith("passed over 3 entries that are not .npy")
    np.save(folder / "z.npy", np.zeros((64, 64, 3), np.float32))  # the last file, bad
    with pytest.raises(ShardError, match=r"z\.npy: array has shape \(64, 64, 3\)"):
        import_npy(str(root), str(tmp_path / "o2"), shard_size=1, progress=False)
    # the 3 shards written before the bad file are removed
    assert not list((tmp_path / "o2").glob("*.parquet"))

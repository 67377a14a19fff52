"""``fastload bench --megapixels``: photo-like datasets per size, every row on every size in one
alternating schedule, the table and the chart of images/s against source megapixels."""
import contextlib
import importlib.util
import io
import json

import pytest

from fastload.bench.megapixels import SizeError, parse_sizes
from fastload.cli import main


def test_parse_sizes():
    assert parse_sizes("1920x1080, 640x480,640x480") == [(640, 480), (1920, 1080)]
    for bad in ("640", "640x", "axb", "8x8", ""):
        with pytest.raises(SizeError):
            parse_sizes(bad)


def test_megapixel_run(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["bench", "--megapixels", "160x120,64x48", "--rows",
                   "albumentations,fastload-cpu", "--num-images", "2", "--seconds", "0.4",
                   "--windows", "2", "--warmup", "0.1", "--batch-size", "2", "--size", "64",
                   "--workers", "1", "--cache", str(cache), "--out", str(out)])
    assert rc == 0, stderr.getvalue()
    res = json.loads((out / "results.json").read_text())
    assert res["meta"]["mode"] == "megapixels"
    assert [p["size"] for p in res["meta"]["sizes"]] == ["64x48", "160x120"]
    assert all(p["mean_jpeg_mb"] > 0 for p in res["meta"]["sizes"])
    keys = [(r["row"], r["source_size"]) for r in res["rows"]]
    assert keys == [("albumentations", "64x48"), ("fastload-cpu", "64x48"),
                    ("albumentations", "160x120"), ("fastload-cpu", "160x120")]
    assert all(r["status"] == "ok" and len(r["images_per_s"]["windows"]) == 2
               for r in res["rows"]), res["rows"]
    assert res["rows"][2]["megapixels"] == pytest.approx(160 * 120 / 1e6)
    md = (out / "megapixels.md").read_text()
    assert "| row | 64x48 | 160x120 |" in md and "| fastload-cpu / albumentations (ratio" in md
    assert md in stdout.getvalue()
    if importlib.util.find_spec("matplotlib") is not None:  # the bench extra
        import matplotlib.pyplot as plt
        img = plt.imread(str(out / "megapixels.png"))
        assert img.ndim == 3 and img.shape[0] > 100
    assert (cache / "photos-160x120-2-s0.packed" / "manifest.json").exists()
    # the data is cached: a second run generates nothing
    stamp = (cache / "photos-160x120-2-s0" / ".complete").stat().st_mtime
    from fastload.bench.data import photo_pack
    photo_pack(cache, 160, 120, 2, 0, 1)
    assert (cache / "photos-160x120-2-s0" / ".complete").stat().st_mtime == stamp

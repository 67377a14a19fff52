"""`fastload bench` end to end on tiny packs (smaller than one batch, YOLO, COCO with subfolders),
and the seed baseline's geometry and targets against fastload's on the same pack."""
import contextlib
import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import fastload
from fastload.cli import main
from tests.helpers.env import has_cuda

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

ROWS = ["torch-seed", "torch-numpy", "albumentations", "fastload-cpu", "fastload-gpu",
        "bound-lmdb", "bound-decode", "bound-nvjpeg"]
QUICK = ["--seconds", "0.6", "--windows", "2", "--warmup", "0.1", "--batch-size", "4",
         "--size", "128", "--workers", "1"]


def _bench(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["bench"] + argv)
    return rc, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """Every row and the stage profile on a synthetic pack of 3 images: fewer than a batch."""
    out = tmp_path_factory.mktemp("bench-out")
    cache = tmp_path_factory.mktemp("bench-cache")
    rc, printed_out, printed_err = _bench(QUICK + ["--num-images", "3", "--stages",
                                                   "--out", str(out), "--cache", str(cache)])
    return rc, out, cache, (printed_out, printed_err)


def test_bench_outputs_well_formed(bench_run):
    rc, out, cache, (printed_out, printed_err) = bench_run
    assert rc == 0, printed_err
    md = (out / "report.md").read_text()
    res = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in res["rows"]] == ROWS
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| ")
                  and not ln.startswith("| row |")]
    assert [ln.split("|")[1].strip() for ln in table_rows[:len(ROWS)]] == ROWS
    assert res["meta"]["num_images"] == 3  # --num-images, fewer than the batch of 4
    assert res["meta"]["packed"] == str(cache / "synth-coco-3-s0.packed")
    cuda = has_cuda()
    for r in res["rows"]:
        name = r["row"]
        if name in ("fastload-gpu", "bound-nvjpeg") and not cuda:
            assert r["status"] == "skipped" and "no GPU" in r["reason"], r
            continue
        assert r["status"] == "ok", r  # a dataset smaller than a batch: every row still runs
        assert r["fastload"] == str(Path(fastload.__file__).parent)  # the rows ran this tree
        ips = r["images_per_s"]
        assert 0 < ips["min"] <= ips["median"] <= ips["max"]
        assert len(ips["windows"]) == 2
        assert 0 < r["cpu_util"] < 2.0
        assert r["peak_rss_mb"] > 10
        if not name.startswith("bound"):
            assert 0 <= r["data_wait"] <= 1
            assert r["step_ms"] == pytest.approx(res["meta"]["step_ms"])
    assert res["ratios_to_torch_seed"]["torch-seed"] == pytest.approx(1.0)
    assert res["ratios_to_albumentations"]["albumentations"] == pytest.approx(1.0)
    assert "fastload-cpu >= 2.5x albumentations" in res["goals"][2]["goal"]
    from fastload.bench.report import paired_ratio
    by = {r["row"]: r for r in res["rows"]}
    w_f = by["fastload-cpu"]["images_per_s"]["windows"]
    w_a = by["albumentations"]["images_per_s"]["windows"]
    assert res["goals"][2]["paired_ratio"] == pytest.approx(
        paired_ratio(by["fastload-cpu"], by["albumentations"]))
    assert paired_ratio(by["fastload-cpu"], by["albumentations"]) == pytest.approx(
        sum(f / a for f, a in zip(w_f, w_a)) / 2)  # two windows: the mean of the two ratios
    assert "(median of per-round ratios:" in md
    assert "Goals (ratios of medians in this run):" in md
    assert "alternating windows: 2 rounds" in md
    assert res["meta"]["step_ms"] > 0
    if HAS_MATPLOTLIB:  # the bench extra (the GPU machine may lack it: then "not drawn")
        assert res["chart"] == "throughput.png"
        import matplotlib.pyplot as plt
        img = plt.imread(str(out / "throughput.png"))
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    else:
        assert res["chart"].startswith("not drawn:")
    assert "| torch-seed |" in printed_out and md in printed_out  # the table, on stdout
    assert f"{out / 'throughput.png'}" in printed_err  # the files written


def test_stage_profile(bench_run):
    _, out, _, _ = bench_run
    res = json.loads((out / "results.json").read_text())
    st = res["stages"]
    for name, first in (("albumentations", "read record"), ("fastload-cpu", "read record")):
        rows = st[name]["stages"]
        assert rows[0][0].startswith(first)
        assert all(ms >= -0.5 for _, ms in rows), rows  # differences may dip below 0 by noise
        assert st[name]["sum_ms"] == pytest.approx(sum(ms for _, ms in rows))
        assert st[name]["whole_ms"] > 0
    checks = st["fastload-cpu"]["checks"]
    assert len(checks) == 2 and all(v > 0 for v in checks.values())
    names = [n for n, _ in st["albumentations"]["stages"]]
    assert [n.split(" ")[0] for n in names] == ["read", "decode", "letterbox", "warp",
                                                 "photometric", "normalize", "targets", "collate"]
    assert "| albumentations stage | ms/image |" in (out / "report.md").read_text()


def test_report_without_matplotlib(bench_run, tmp_path, monkeypatch):
    """matplotlib is the ``bench`` extra: without it the report and the numbers are written,
    and both say what the chart needs."""
    from fastload.bench import report
    _, out, _, _ = bench_run
    res = json.loads((out / "results.json").read_text())
    (tmp_path / "throughput.png").write_bytes(b"an older run's chart")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like
    md, written = report.write_all({"meta": res["meta"], "rows": res["rows"]}, tmp_path)
    assert written == [tmp_path / "report.md", tmp_path / "results.json"]
    assert not (tmp_path / "throughput.png").exists()
    assert "pip install 'fastload[bench]'" in md
    assert (tmp_path / "report.md").read_text() == md
    again = json.loads((tmp_path / "results.json").read_text())
    assert "fastload[bench]" in again["chart"] and again["rows"] == res["rows"]


def test_bench_bad_arguments(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["bench", "--rows", "torch-seed,warp-drive", "--out", str(tmp_path / "o")]) == 2
    assert "warp-drive" in capsys.readouterr().err
    src = tmp_path / "src"
    src.mkdir()
    assert main(["bench", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a packed dataset" in err and "--format" in err and "fastload pack" in err
    assert main(["bench", "--format", "coco", "--out", str(tmp_path / "o")]) == 2
    assert "--format needs a DATASET" in capsys.readouterr().err
    assert main(["bench", "--megapixels", "640by480", "--out", str(tmp_path / "o")]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_num_images_option(capsys, monkeypatch):
    """``--num-images`` is the count (pack's ``--images`` is a folder); the old spelling still
    works for now and says so."""
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    helptext = capsys.readouterr().out
    assert "--num-images" in helptext and "--images " not in helptext
    import fastload.bench.suite as suite
    seen = []
    monkeypatch.setattr(suite, "run", lambda a: seen.append((a.num_images, a.argv)) or 0)
    assert main(["bench", "--images", "5"]) == 0
    assert "--images is now --num-images" in capsys.readouterr().err
    assert main(["bench", "--num-images", "7"]) == 0
    assert [n for n, _ in seen] == [5, 7]
    assert seen[1][1][-2:] == ["--num-images", "7"]  # the command as report.md shows it
    assert main(["bench", "--images", "5", "--num-images", "6"]) == 2
    assert "old name of --num-images" in capsys.readouterr().err


LIGHT_ROWS = "torch-seed,albumentations,fastload-cpu,bound-decode"


def _check_light_run(out, n_images):
    res = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in res["rows"]] == LIGHT_ROWS.split(",")
    assert all(r["status"] == "ok" for r in res["rows"]), [r.get("reason") for r in res["rows"]]
    assert res["meta"]["num_images"] == n_images
    return res


def test_bench_yolo_pack(tmp_path):
    """Any packed dataset: a YOLO-seg source packed first (every other image without a label
    file, so without instances, as in coco128-seg); the baselines read the pack."""
    from fastload.packing import pack
    from fastload.synth import write_dataset
    write_dataset(tmp_path / "yolo", "yolo", n_images=5, seed=2, width=160, height=120,
                  empty_every=2)
    pack(tmp_path / "yolo", tmp_path / "packed", format="yolo", workers=1, progress=False)
    rc, _, err = _bench([str(tmp_path / "packed")] + QUICK +
                        ["--rows", LIGHT_ROWS, "--out", str(tmp_path / "out")])
    assert rc == 0, err
    res = _check_light_run(tmp_path / "out", 5)
    assert res["meta"]["source_format"] == "yolo" and res["meta"]["median_size"] == "160x120"
    from fastload import Dataset
    assert sum(r.num_instances == 0 for r in Dataset(tmp_path / "packed")) == 2


def test_bench_coco_with_subfolders(tmp_path):
    """COCO ``file_name`` with a subfolder (``images/sub/...``): packed with --format by the
    command itself into OUT/packed; the baselines never look for the original files."""
    from fastload.synth import write_dataset
    src = tmp_path / "coco"
    write_dataset(src, "coco", n_images=5, seed=4, width=160, height=120)
    js = src / "annotations" / "instances.json"
    d = json.loads(js.read_text())
    (src / "images" / "sub").mkdir()
    for im in d["images"][::2]:
        shutil.move(src / "images" / im["file_name"], src / "images" / "sub" / im["file_name"])
        im["file_name"] = f"sub/{im['file_name']}"
    js.write_text(json.dumps(d))
    rc, _, err = _bench([str(src), "--format", "coco"] + QUICK +
                        ["--rows", LIGHT_ROWS, "--out", str(tmp_path / "out")])
    assert rc == 0, err
    res = _check_light_run(tmp_path / "out", 5)
    assert res["meta"]["packed"] == str(tmp_path / "out" / "packed")
    from fastload import Dataset
    assert "sub/" in Dataset(tmp_path / "out" / "packed")[0].file_name


def test_bench_png_pack(tmp_path):
    """A pack of PNG images (the mask-PNG layout): every reader decodes PNG, the decode bound
    too."""
    pytest.importorskip("skimage", reason="tracing mask PNGs needs fastload[masks]")
    from fastload.synth import write_dataset
    write_dataset(tmp_path / "masks", "masks", n_images=3, seed=1, width=96, height=64)
    rc, _, err = _bench([str(tmp_path / "masks"), "--format", "masks"] + QUICK +
                        ["--rows", LIGHT_ROWS, "--out", str(tmp_path / "out")])
    assert rc == 0, err
    _check_light_run(tmp_path / "out", 3)
    from fastload import Dataset
    assert Dataset(tmp_path / "out" / "packed")[0].image_format == "png"


# ---------------------------------------------------------------- the seed baseline vs fastload
@pytest.fixture(scope="module")
def packed16(tmp_path_factory):
    from fastload.bench.data import synthetic_pack
    return synthetic_pack(tmp_path_factory.mktemp("cache16"), 16, 0, 1)


def test_baseline_geometry_matches_fastload(packed16):
    """The seed baseline moves the polygons with the same per-sample matrices as fastload:
    with a config that keeps every instance inside the frame, its boxes equal
    ``transform_instances``'s boxes for the same (seed, epoch, index)."""
    from fastload import Dataset
    from fastload.augment.config import AugmentConfig
    from fastload.augment.geometry import transform_instances
    from fastload.augment.params import sample_params
    from fastload.bench.pil_baseline import PilNumpyDataset
    cfg = AugmentConfig(out_size=(128, 128), scale=(0.5, 0.6), hflip_prob=0.5)
    base = PilNumpyDataset(packed16, cfg=cfg, seed=7, targets="numpy")
    ds = Dataset(packed16)
    assert len(ds) == len(base) == 16
    for i in range(6):
        rec = ds[i]
        p = sample_params(cfg, 7, 0, i, rec.height, rec.width)
        ti = transform_instances(rec, p, cfg.out_size, cfg.min_visible)
        b = base[i]
        np.testing.assert_allclose(b["boxes"].numpy(), ti.boxes[~ti.ignore], atol=2e-3)
        np.testing.assert_array_equal(b["labels"].numpy(), ti.labels[~ti.ignore])
        assert int(b["reg_mask"].sum()) == len(ti.labels[~ti.ignore])


def test_baseline_deterministic_and_epoch_dependent(packed16):
    from fastload.augment.config import AugmentConfig
    from fastload.bench.pil_baseline import PilNumpyDataset
    ds = PilNumpyDataset(packed16, cfg=AugmentConfig(out_size=(64, 64)), targets="python")
    a, b = ds[3], ds[3]
    assert a["image"].shape == (3, 64, 64) and a["hm"].shape == (5, 16, 16)
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    c = ds[3 + len(ds)]  # same image, epoch 1: other parameters
    assert not np.array_equal(a["image"].numpy(), c["image"].numpy())


def test_baseline_image_and_targets_match_fastload_cpu(packed16):
    """Same work, same result: with noise off (the two use different noise generators) the
    baseline's PIL/NumPy image equals fastload's CPU image up to resampling/edge-rule
    differences, and its CenterNet targets equal fastload's."""
    from fastload.augment.config import AugmentConfig
    from fastload.bench.pil_baseline import PilNumpyDataset
    from fastload.loader import TorchDataset
    # shrinking < 2x (640x480 -> 320 zoomed 1.1 to 1.3: 0.55 to 0.65), so fastload decodes at
    # full size like the baseline (2x or more: a reduced, anti-aliased JPEG decode, another
    # resampling; docs/cpu_backend.md)
    cfg = AugmentConfig(out_size=(320, 320), scale=(1.1, 1.3), noise_sigma=(0.0, 0.0),
                        shadow_prob=0.5, hue_deg=(-30.0, 30.0))
    base = PilNumpyDataset(packed16, cfg=cfg, seed=5, targets="python")
    fast = TorchDataset(packed16, augment=cfg, targets=["centernet"], seed=5)
    std = np.asarray(cfg.std, np.float32)[:, None, None]
    for i in range(4):
        a, b = base[i], fast[i]
        d = np.abs(a["image"].numpy() - b["image"].numpy()) * std  # 0..255 units
        assert d.mean() < 1.5, (i, d.mean())
        assert (d > 3).mean() < 0.03, (i, (d > 3).mean())
        for k in ("hm", "wh", "reg"):
            np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-5, err_msg=k)
        for k in ("ind", "reg_mask"):
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)

import hashlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastload.cli import main as cli_main
from fastload.packing import PackError, pack
from fastload.store import Dataset, StoreError
from fastload.synth.scenes import encode_jpeg, make_scene

ROOT = Path(__file__).resolve().parents[2]
W, H = 120, 90


def _base(root: Path, n=3):
    """A tiny valid COCO dataset: n images, one triangle each (annotation ids 1..n)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    for i in range(n):
        (root / "images" / f"{i}.jpg").write_bytes(encode_jpeg(make_scene(rng, W, H, 1).image))
        data["images"].append({"id": i + 1, "file_name": f"{i}.jpg", "height": H, "width": W})
        data["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                    "segmentation": [[10, 10, 60, 12, 30, 50]]})
    return data


def _seg(data, k, seg):
    data["annotations"][k]["segmentation"] = seg


# name -> (mutation(root, data), reason, fatal (whole image skipped), text in the message)
CASES = {
    "missing_image": (lambda r, d: (r / "images" / "1.jpg").unlink(), "missing_image", True, "not found"),
    "unreadable_image": (lambda r, d: ((r / "images" / "1.jpg").unlink(),
                                       (r / "images" / "1.jpg").mkdir()), "unreadable_image", True,
                         "cannot read"),
    "garbage_bytes": (lambda r, d: (r / "images" / "1.jpg").write_bytes(os.urandom(3000)),
                      "corrupt_image", True, "not a recognised image"),
    "truncated_jpeg": (lambda r, d: (r / "images" / "1.jpg").write_bytes(
        (r / "images" / "1.jpg").read_bytes()[:1500]), "corrupt_image", True, "truncated JPEG"),
    "size_mismatch": (lambda r, d: d["images"][1].update(height=H + 10), "size_mismatch", True,
                      "declares"),
    "escapes_root": (lambda r, d: ((r.parent / "outside.jpg").write_bytes(
        (r / "images" / "0.jpg").read_bytes()), d["images"][1].update(file_name="../../outside.jpg")),
        "path_escapes_root", True, "escapes the dataset root"),
    "two_points": (lambda r, d: _seg(d, 1, [[10, 10, 50, 50]]), "too_few_points", False,
                   "2 point(s)"),
    "nan": (lambda r, d: _seg(d, 1, [[10, 10, float("nan"), 12, 30, 50]]), "non_finite", False,
            "NaN"),
    "inf": (lambda r, d: _seg(d, 1, [[10, 10, float("inf"), 12, 30, 50]]), "non_finite", False,
            "infinite"),
    "zero_area": (lambda r, d: _seg(d, 1, [[10, 10, 20, 20, 30, 30]]), "zero_area", False,
                  "zero area"),
    "far_outside": (lambda r, d: _seg(d, 1, [[10, 10, W + 40, 12, 30, 50]]), "outside_image", False,
                    "outside the 120x90 image"),
    "unknown_category": (lambda r, d: d["annotations"][1].update(category_id=7), "unknown_category",
                         False, "unknown category_id 7"),
}


def _make(tmp_path, case):
    src = tmp_path / "ds" / "src"
    data = _base(src)
    mutate, *_ = CASES[case]
    mutate(src, data)
    (src / "annotations.json").write_text(json.dumps(data))
    return src


@pytest.mark.parametrize("case", sorted(CASES))
def test_skip_and_count(tmp_path, case):
    _, reason, fatal, text = CASES[case]
    src = _make(tmp_path, case)
    out = tmp_path / "out"
    s = pack(src, out, "coco", workers=1, progress=False)
    ds = Dataset(out)
    assert s.problems == 1
    if fatal:
        assert s.skipped_images == {reason: 1} and len(ds) == 2
        assert [r.file_name for r in ds] == ["0.jpg", "2.jpg"]
    else:
        assert s.skipped_annotations == {reason: 1} and len(ds) == 3
        assert [r.num_instances for r in ds] == [1, 0, 1]
    lines = (out / "problems.txt").read_text().splitlines()[1:]
    assert len(lines) == 1 and text in lines[0] and reason in lines[0]
    assert ("1.jpg" in lines[0] or "outside.jpg" in lines[0])
    if not fatal:
        assert "annotation 2" in lines[0]
    assert json.loads((out / "pack_report.json").read_text())["problems"] == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_strict_fails_naming_file_and_annotation(tmp_path, case):
    _, _, fatal, text = CASES[case]
    src = _make(tmp_path, case)
    with pytest.raises(PackError, match="strict") as e:
        pack(src, tmp_path / "out", "coco", workers=1, progress=False, strict=True)
    msg = str(e.value)
    assert text in msg and ("1.jpg" in msg or "outside.jpg" in msg)
    if not fatal:
        assert "annotation 2" in msg
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.fastload-tmp-*"))  # temp folder removed


def test_small_overshoot_is_clipped(tmp_path):
    src = tmp_path / "src"
    data = _base(src)
    _seg(data, 0, [[-0.7, 10, 60, 12, 30, H + 0.4]])
    (src / "a.json").write_text(json.dumps(data))
    s = pack(src, tmp_path / "out", "coco", workers=1, progress=False, strict=True)
    p = Dataset(tmp_path / "out")[0].instances[0].polygons[0]
    assert s.clipped_vertices == 2 and s.problems == 0
    assert np.array_equal(p, np.array([[0, 10], [60, 12], [30, H]], np.float32))


def test_out_handling(tmp_path, capsys):
    src = tmp_path / "src"
    (src).mkdir()
    data = _base(src)
    (src / "a.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    out.mkdir()
    pack(src, out, "coco", workers=1, progress=False)  # an empty OUT is fine
    with pytest.raises(PackError, match="--overwrite"):
        pack(src, out, "coco", workers=1, progress=False)
    assert cli_main(["pack", str(src), str(out), "-f", "coco", "-q"]) == 2
    assert "not empty" in capsys.readouterr().err
    data["images"] = data["images"][:2]
    (src / "a.json").write_text(json.dumps(data))
    assert cli_main(["pack", str(src), str(out), "-f", "coco", "-q", "--overwrite"]) == 0
    assert len(Dataset(out)) == 2
    assert not list(tmp_path.glob(".out.*"))
    with pytest.raises(PackError, match="contains the source"):
        pack(src, tmp_path, "coco", overwrite=True)
    with pytest.raises(PackError, match="contains the source"):
        pack(src, src, "coco", overwrite=True)
    assert (src / "a.json").exists()
    with pytest.raises(ValueError, match="unknown format"):
        pack(src, tmp_path / "o2", "nope")
    with pytest.raises(PackError, match="no such file"):
        pack(tmp_path / "absent", tmp_path / "o2", "coco")


def _many_links(src: Path, n: int):
    """n images that are hard links to one small JPEG (a slowish pack that costs no disk)."""
    (src / "images").mkdir(parents=True)
    one = src / "one.jpg"
    one.write_bytes(encode_jpeg(make_scene(np.random.default_rng(1), 64, 48, 1).image))
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    for i in range(n):
        os.link(one, src / "images" / f"{i:05d}.jpg")
        data["images"].append({"id": i, "file_name": f"{i:05d}.jpg", "height": 48, "width": 64})
        data["annotations"].append({"id": i, "image_id": i, "category_id": 1,
                                    "segmentation": [[1, 1, 30, 2, 20, 40]]})
    (src / "ann.json").write_text(json.dumps(data))


def test_killed_pack_leaves_nothing_and_rerun_works(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    n = 4000
    _many_links(src, n)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "fastload.cli", "pack", str(src), str(out), "-f", "coco",
           "--shard-size", "200", "--workers", "2", "-q"]
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    killed = False
    while time.time() < deadline and p.poll() is None:
        tmps = list(tmp_path.glob(".out.fastload-tmp-*"))
        if tmps and (tmps[0] / "shard-00002.lmdb").exists():
            os.killpg(p.pid, signal.SIGKILL)  # the whole job: main process and workers
            killed = True
            break
        time.sleep(0.005)
    p.wait()
    assert killed, f"pack finished before it could be killed: {p.stderr.read()[-500:]}"
    assert not out.exists()
    with pytest.raises(StoreError):
        Dataset(out)
    (leftover,) = tmp_path.glob(".out.fastload-tmp-*")
    with pytest.raises(StoreError, match="no manifest"):
        Dataset(leftover)  # the half-written folder is not a dataset either
    s = pack(src, out, "coco", shard_size=1000, workers=2, progress=False)
    assert s.images == n and len(Dataset(out)) == n
    assert not leftover.exists()


def _read_all(path):
    from fastload.store import shards
    inherited = len(shards._ENVS)  # handles inherited through fork are dropped at fork time
    ds = Dataset(path)
    h = hashlib.blake2b()
    for i in range(len(ds)):
        h.update(ds.get_raw(i))
    return inherited, os.getpid(), h.hexdigest()


def test_forked_readers(tmp_path):
    src = tmp_path / "src"
    _many_links(src, 300)
    pack(src, tmp_path / "out", "coco", shard_size=64, workers=1, progress=False)
    inherited, _, want = _read_all(tmp_path / "out")  # parent opens every shard first
    ctx = mp.get_context("fork")
    with ctx.Pool(3, maxtasksperchild=1) as pool:
        res = pool.map(_read_all, [tmp_path / "out"] * 6, chunksize=1)
    assert all(r[2] == want for r in res)
    assert all(r[0] == 0 for r in res)
    assert _read_all(tmp_path / "out")[2] == want  # the parent's handles still work


def test_validate_parts_kernel_matches_reference(rng):
    from fastload.packing import OVERSHOOT, validate_parts, validate_parts_reference
    for _ in range(200):
        n = int(rng.integers(0, 6))
        lens = rng.integers(0, 8, n)
        w, h = float(rng.integers(5, 50)), float(rng.integers(5, 50))
        pts = np.stack([rng.uniform(-4, w + 4, lens.sum()), rng.uniform(-4, h + 4, lens.sum())], 1)
        if len(pts) and rng.random() < 0.2:
            pts[rng.integers(0, len(pts))] = rng.choice([np.nan, np.inf, -np.inf])
        if n and rng.random() < 0.2:  # a degenerate (collinear) part
            k = int(rng.integers(0, n))
            a = int(lens[:k].sum())
            t = rng.uniform(0, 1, lens[k])
            pts[a:a + lens[k]] = np.stack([t * w, t * h], 1)
        offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
        out = np.zeros((len(pts), 2), np.float32)
        codes, clipped = validate_parts(pts, offsets, w, h, OVERSHOOT, out)
        rc, rcl, rout = validate_parts_reference(pts, offsets, w, h, OVERSHOOT)
        assert np.array_equal(codes, rc) and np.array_equal(clipped, rcl)
        for p in np.flatnonzero(codes == 0):
            assert np.array_equal(out[offsets[p]:offsets[p + 1]], rout[offsets[p]:offsets[p + 1]])


def test_a_failing_lazy_sample_is_skipped_not_a_traceback():
    from fastload.formats.base import SourceSample
    from fastload.packing.engine import SampleWork

    class Broken(SourceSample):
        @property
        def instances(self):
            raise RuntimeError("mask PNG is corrupt")

        @instances.setter
        def instances(self, v):
            pass

    img = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    work = SampleWork(num_classes=1, root=None, num_keypoints=None)
    value, problems, _ = work.prepare(Broken(file_name="m.png", image_bytes=img), 0)
    assert value is None and problems[0].fatal and "mask PNG is corrupt" in str(problems[0])

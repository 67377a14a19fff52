"""What ``fastload pack`` may replace, and how it replaces it without losing data: only an
empty OUT or a fastload dataset; never an input; one pack per OUT at a time; a pack killed
between the two renames of its publish loses neither copy (real processes, real SIGKILL)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastload.cli import main as cli_main
from fastload.packing import PackError, pack
from fastload.store import Dataset, StoreError
from fastload.synth.datasets import write_dataset

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture
def src(tmp_path):
    write_dataset(tmp_path / "src", "coco", n_images=4, width=64, height=48, seed=0)
    return tmp_path / "src"


def _pack(src, out, **kw):
    return pack(src, out, "coco", workers=1, progress=False, **kw)


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(src, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("three years of work")
    with pytest.raises(PackError, match="not a fastload dataset .*no manifest.json"):
        _pack(src, out, overwrite=True)
    assert cli_main(["pack", str(src), str(out), "-f", "coco", "-q", "--overwrite"]) == 2
    assert "--overwrite refused" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "three years of work"


def test_overwrite_refuses_a_dataset_holding_other_files(src, tmp_path):
    out = tmp_path / "out"
    _pack(src, out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PackError, match=r"holds files fastload did not write \(notes.txt\)"):
        _pack(src, out, overwrite=True)
    assert (out / "notes.txt").exists() and len(Dataset(out)) == 4
    (out / "notes.txt").unlink()
    assert _pack(src, out, overwrite=True).images == 4  # a dataset alone is replaced


def test_an_input_inside_out_is_refused(src, tmp_path):
    """--images inside OUT: replacing OUT would have deleted the source images."""
    out = tmp_path / "out"
    out.mkdir()
    os.rename(src / "images", out / "images")
    with pytest.raises(PackError, match="contains the image folder"):
        _pack(src / "annotations" / "instances.json", out, overwrite=True, images=out / "images")
    # the annotation file inside OUT: the same
    ann = out / "instances.json"
    os.rename(src / "annotations" / "instances.json", ann)
    with pytest.raises(PackError, match="contains the source"):
        _pack(ann, out, overwrite=True)
    assert len(list((out / "images").iterdir())) == 4


def _slow_pack(src_dir: Path, out: Path, n=3000):
    """Start a CLI pack of n hard links to one JPEG (slow enough to overlap with)."""
    import numpy as np
    from fastload.synth.scenes import encode_jpeg, make_scene
    (src_dir / "images").mkdir(parents=True)
    one = src_dir / "one.jpg"
    one.write_bytes(encode_jpeg(make_scene(np.random.default_rng(1), 64, 48, 1).image))
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    for i in range(n):
        os.link(one, src_dir / "images" / f"{i:05d}.jpg")
        data["images"].append({"id": i, "file_name": f"{i:05d}.jpg", "height": 48, "width": 64})
        data["annotations"].append({"id": i, "image_id": i, "category_id": 1,
                                    "segmentation": [[1, 1, 30, 2, 20, 40]]})
    (src_dir / "ann.json").write_text(json.dumps(data))
    return subprocess.Popen([sys.executable, "-m", "fastload", "pack", str(src_dir), str(out),
                             "-f", "coco", "-q", "--shard-size", "100", "-j", "1"], env=ENV,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def test_a_second_pack_to_the_same_out_is_refused_while_the_first_runs(src, tmp_path):
    out = tmp_path / "out"
    first = _slow_pack(tmp_path / "big", out)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None and \
            not list(tmp_path.glob(".out.fastload-tmp-*")):
        time.sleep(0.01)
    if first.poll() is not None:
        pytest.skip("the first pack finished before the second could start")
    with pytest.raises(PackError, match="another fastload pack is writing it"):
        _pack(src, out, overwrite=True)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert len(Dataset(out)) == 3000  # the first pack's dataset, not replaced by the second
    assert not list(tmp_path.glob(".out.*"))  # lock file and temp folder gone


def test_a_kill_between_the_renames_of_publish_loses_nothing(src, tmp_path):
    """The child is killed (SIGKILL, by itself) right after publish moved the old OUT aside and
    before it renamed the new one in: OUT is missing. The next pack must put the old dataset
    back, never delete both copies."""
    out = tmp_path / "out"
    _pack(src, out)
    before = [Dataset(out).get_raw(i) for i in range(4)]
    Dataset(out).close()
    write_dataset(tmp_path / "src2", "coco", n_images=2, width=64, height=48, seed=7)
    code = ("import os, signal, sys\n"
            "import fastload.packing.publish as publish\n"
            "real = os.replace\n"
            "def replace(a, b):\n"
            "    real(a, b)\n"
            "    if '.fastload-old-' in str(b):\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "publish.os.replace = replace\n"
            "from fastload.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    p = subprocess.run([sys.executable, "-c", code, "pack", str(tmp_path / "src2"), str(out),
                        "-f", "coco", "-q", "--overwrite", "-j", "1"], env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not out.exists()
    assert len(list(tmp_path.glob(".out.fastload-old-*"))) == 1
    assert len(list(tmp_path.glob(".out.fastload-tmp-*"))) == 1
    with pytest.raises(StoreError, match="killed while replacing it"):
        Dataset(out)
    with pytest.raises(PackError, match="not empty.*restored the previous dataset from "
                                        r"\.out\.fastload-old-"):  # restored: protected again
        _pack(tmp_path / "src2", out)
    assert [Dataset(out).get_raw(i) for i in range(4)] == before
    assert not list(tmp_path.glob(".out.fastload-*"))
    assert _pack(tmp_path / "src2", out, overwrite=True).images == 2

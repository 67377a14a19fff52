"""Hostile inputs to ``fastload pack``, each packed for real: decompression bombs, special
files (FIFOs, devices), symlinks leading out of the dataset, duplicate COCO ids, a source
where nothing packs, and the malformed entries that used to abort a pack with a traceback.
The policy of each is in docs/bad_input.md."""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastload.cli import main as cli_main
from fastload.packing import PackError, pack
from fastload.store import Dataset
from fastload.synth.datasets import write_dataset
from fastload.synth.scenes import encode_jpeg, make_scene

ROOT = Path(__file__).resolve().parents[2]
W, H = 120, 90


def _coco(root: Path, n=3, size=(W, H)):
    """n images (one triangle each) as a COCO dict (written by _write); images in root/images."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    for i in range(n):
        (root / "images" / f"{i}.jpg").write_bytes(encode_jpeg(make_scene(rng, *size, 1).image))
        data["images"].append({"id": i + 1, "file_name": f"{i}.jpg", "height": size[1],
                               "width": size[0]})
        data["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1,
                                    "iscrowd": 0, "segmentation": [[10, 10, 60, 12, 30, 50]]})
    return data


def _write(root: Path, data):
    (root / "ann.json").write_text(json.dumps(data))
    return root


def _pack(src, out, fmt="coco", **kw):
    return pack(src, out, fmt, workers=1, progress=False, **kw)


def _lines(out):
    return (out / "problems.txt").read_text().splitlines()[1:]


# ----------------------------------------------------------------- decompression bombs
def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is patched to claim width x height."""
    data = bytearray(encode_jpeg(np.zeros((16, 16, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 49)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("bomb", [_jpeg_claiming(60000, 60000), _png_claiming(20000, 20000)],
                         ids=["jpeg-60000x60000", "png-20000x20000"])
def test_decompression_bomb_is_refused_from_its_header(tmp_path, bomb):
    src = tmp_path / "src"
    data = _coco(src)
    (src / "images" / "1.jpg").write_bytes(bomb)
    del data["images"][1]["height"], data["images"][1]["width"]
    s = _pack(_write(src, data), tmp_path / "out")
    assert s.skipped_images == {"too_many_pixels": 1} and len(Dataset(tmp_path / "out")) == 2
    (line,) = _lines(tmp_path / "out")
    assert line.startswith("1.jpg: ") and "over the limit" in line and "too_many_pixels" in line


def test_pixel_cap_is_configurable(tmp_path):
    src = tmp_path / "src"
    data = _coco(src)
    big = make_scene(np.random.default_rng(5), 200, 150, 1).image
    (src / "images" / "2.jpg").write_bytes(encode_jpeg(big))
    data["images"][2].update(width=200, height=150)
    _write(src, data)
    s = _pack(src, tmp_path / "a", max_pixels=20000)  # 120x90 = 10800 fits, 200x150 does not
    assert s.skipped_images == {"too_many_pixels": 1} and s.images == 2
    assert "30,000 pixels, over the limit of 20,000" in _lines(tmp_path / "a")[0]
    assert _pack(src, tmp_path / "b", max_pixels=0).images == 3  # 0: no limit
    with pytest.raises(PackError, match="max_pixels"):
        _pack(src, tmp_path / "c", max_pixels="lots")
    # the environment variable sets the default; --max-pixels beats it
    env = dict(os.environ, PYTHONPATH=str(ROOT), FASTLOAD_MAX_IMAGE_PIXELS="20000")
    cmd = [sys.executable, "-m", "fastload", "pack", str(src), "-f", "coco", "-q"]
    p = subprocess.run(cmd + [str(tmp_path / "d")], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and "too_many_pixels 1" in p.stdout, p.stderr
    p = subprocess.run(cmd + [str(tmp_path / "e"), "--max-pixels", "0"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0 and "packed 3 images" in p.stdout, p.stderr
    env["FASTLOAD_MAX_IMAGE_PIXELS"] = "many"
    p = subprocess.run(cmd + [str(tmp_path / "f")], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "FASTLOAD_MAX_IMAGE_PIXELS" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1


def test_coco_rle_size_is_checked_before_decoding(tmp_path):
    """A tiny RLE claiming a mask far larger than its image is refused unread (it used to be
    decoded: 4 GB for [20000, 20000]); without a declared image size the pixel cap applies."""
    src = tmp_path / "src"
    data = _coco(src, n=4)
    data["annotations"][0]["segmentation"] = {"size": [4000, 4000], "counts": [16_000_000]}
    data["annotations"][1]["segmentation"] = {"size": [20000, 20000], "counts": "0" * 12}
    del data["images"][2]["height"], data["images"][2]["width"]
    data["annotations"][2]["segmentation"] = {"size": [200, 200], "counts": [40000]}
    s = _pack(_write(src, data), tmp_path / "out", max_pixels=12000)
    assert s.skipped_annotations == {"rle_size": 2, "too_many_pixels": 1}
    lines = _lines(tmp_path / "out")
    assert "RLE size 4000x4000 differs from the image's 120x90" in lines[0]
    assert "annotation 1" in lines[0] and "0.jpg" in lines[0]


# ------------------------------------------------------------------------ special files
def _pack_in_subprocess(src, out, *args, timeout=60, memory=3 << 30):
    """``fastload pack`` in a child process, its address space capped (a reader that reads
    /dev/zero fails there instead of taking the machine's memory), with a time limit (a
    reader that opens a FIFO blocks)."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, "
            f"({memory}, {memory})); from fastload.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, "pack", str(src), str(out), "-q", *args],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_a_fifo_image_is_refused_not_waited_for(tmp_path):
    src = tmp_path / "src"
    data = _coco(src)
    (src / "images" / "1.jpg").unlink()
    os.mkfifo(src / "images" / "1.jpg")
    os.symlink("1.jpg", src / "images" / "link.jpg")  # a symlink to the FIFO: the same
    data["images"].append({"id": 9, "file_name": "link.jpg"})
    p = _pack_in_subprocess(_write(src, data), tmp_path / "out", "-f", "coco")
    assert p.returncode == 0, p.stderr
    assert "special_file 2" in p.stdout
    lines = _lines(tmp_path / "out")
    assert all("is a FIFO (named pipe), not a regular file" in ln for ln in lines)


def test_a_device_is_refused_and_a_symlink_to_dev_zero_is_outside(tmp_path):
    """/dev/zero through a symlink in the image folder (it used to be read until memory ran
    out), and a device inside the image folder itself (--images /dev)."""
    src = tmp_path / "src"
    data = _coco(src)
    (src / "images" / "1.jpg").unlink()
    os.symlink("/dev/zero", src / "images" / "1.jpg")
    p = _pack_in_subprocess(_write(src, data), tmp_path / "out", "-f", "coco")
    assert p.returncode == 0, p.stderr
    assert "path_escapes_root 1" in p.stdout
    dev = {"images": [{"id": 1, "file_name": "zero"}, {"id": 2, "file_name": "null"}],
           "categories": [{"id": 1, "name": "a"}], "annotations": []}
    (tmp_path / "dev.json").write_text(json.dumps(dev))
    p = _pack_in_subprocess(tmp_path / "dev.json", tmp_path / "out2", "-f", "coco",
                            "--images", "/dev", "--allow-empty")
    assert p.returncode == 0 and "special_file 2" in p.stdout, p.stderr
    assert "is a character device, not a regular file" in (tmp_path / "out2" / "problems.txt").read_text()


@pytest.mark.parametrize("fmt, fifo", [("yolo", "labels/train/00001.txt"),
                                       ("labelme", "img_00001.json"),
                                       ("masks", "PedMasks/FudanPed00001_mask.png")])
def test_special_label_and_mask_files_are_refused(tmp_path, fmt, fifo):
    """A FIFO where a label file, an annotation file or a mask belongs: skipped and counted
    (labelme used to block on it forever, YOLO and masks took it for a missing file)."""
    write_dataset(tmp_path / "src", fmt, n_images=2, width=64, height=48, seed=0)
    (tmp_path / "src" / fifo).unlink()
    os.mkfifo(tmp_path / "src" / fifo)
    p = _pack_in_subprocess(tmp_path / "src", tmp_path / "out", "-f", fmt)
    assert p.returncode == 0, p.stderr
    assert "packed 1 images" in p.stdout and "skipped images: 1 (special_file 1)" in p.stdout


def test_a_symlink_to_a_file_inside_the_root_is_fine(tmp_path):
    src = tmp_path / "src"
    data = _coco(src)
    os.symlink("0.jpg", src / "images" / "alias.jpg")
    data["images"].append({"id": 9, "file_name": "alias.jpg", "height": H, "width": W})
    s = _pack(_write(src, data), tmp_path / "out")
    assert s.problems == 0 and s.images == 4
    ds = Dataset(tmp_path / "out")
    assert ds[3].image_bytes == (src / "images" / "0.jpg").read_bytes()


# -------------------------------------------------------------------------- containment
@pytest.mark.parametrize("fmt", ["coco", "labelme", "via", "yolo", "masks"])
def test_a_symlink_leading_out_of_the_dataset_is_refused_in_every_format(tmp_path, fmt):
    """One containment rule on resolved paths for every reader (COCO and YOLO used to
    follow such a symlink and pack the file it pointed to)."""
    src = tmp_path / "src"
    write_dataset(src, fmt, n_images=3, width=64, height=48, seed=0)
    first = {"coco": "images/000000.jpg", "labelme": "img_00000.jpg", "via": "00000.jpg",
             "yolo": "images/train/00000.jpg", "masks": "PNGImages/FudanPed00000.png"}[fmt]
    outside = tmp_path / "elsewhere" / Path(first).name
    outside.parent.mkdir()
    shutil.move(src / first, outside)
    os.symlink(outside, src / first)
    s = _pack(src, tmp_path / "out", fmt)
    assert s.skipped_images == {"path_escapes_root": 1} and s.images == 2, s


def test_yolo_label_symlink_and_yaml_path_stay_inside(tmp_path):
    src = tmp_path / "ds" / "src"
    write_dataset(src, "yolo", n_images=2, width=64, height=48, seed=0)
    label = src / "labels" / "train" / "00000.txt"
    secret = tmp_path / "secret.txt"
    secret.write_text("0 0.1 0.1 0.9 0.1 0.5 0.9\n")
    label.unlink()
    os.symlink(secret, label)
    s = _pack(src, tmp_path / "o1", "yolo")
    assert s.skipped_images == {"path_escapes_root": 1}
    assert "labels/train/00000.txt" in _lines(tmp_path / "o1")[0]
    # a data.yaml whose path: climbs out (it made pack scan / once): refused, nothing read
    other = tmp_path / "ds" / "images"
    other.mkdir()
    (other / "unrelated.jpg").write_bytes(encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    (src / "data.yaml").write_text("path: ..\nnames: [a, b, c, d, e]\n")
    with pytest.raises(PackError, match="leads outside the dataset folder"):
        _pack(src / "data.yaml", tmp_path / "o2", "yolo")
    (src / "data.yaml").write_text("path: .\nnames: [a, b, c, d, e]\n")
    label.unlink()
    label.write_text("0 0.1 0.1 0.9 0.1 0.5 0.9\n")
    assert _pack(src / "data.yaml", tmp_path / "o3", "yolo", strict=True).images == 2


# ------------------------------------------------------------------- duplicate COCO ids
def test_duplicate_coco_image_ids(tmp_path):
    src = tmp_path / "src"
    data = _coco(src, n=4)
    data["images"][1]["id"] = 1  # 0.jpg and 1.jpg share id 1: whose are its annotations?
    data["annotations"][1]["image_id"] = 1
    data["images"].append(dict(data["images"][2]))  # 2.jpg listed twice, identically
    s = _pack(_write(src, data), tmp_path / "out")
    assert s.skipped_images == {"duplicate_image_id": 3}
    ds = Dataset(tmp_path / "out")
    assert [r.file_name for r in ds] == ["2.jpg", "3.jpg"]
    assert [r.num_instances for r in ds] == [1, 1]  # no image got another's annotations
    text = "\n".join(_lines(tmp_path / "out"))
    assert text.count("image id 1 is used by 2 images (0.jpg, 1.jpg)") == 2
    assert "image id 3 is listed again for the same file" in text
    with pytest.raises(PackError, match="strict.*image id 1 is used by 2 images"):
        _pack(src, tmp_path / "o2", strict=True)


# ------------------------------------------------------------------------ nothing packs
def test_nothing_packed_is_an_error_saying_what_was_looked_for(tmp_path, capsys):
    src = tmp_path / "src"
    write_dataset(src, "coco", n_images=3, width=64, height=48, seed=0)
    with pytest.raises(PackError, match=r"nothing to pack: the labelme reader found no image .*"
                                        r"looked for labelme JSON files .*not a labelme file"):
        _pack(src, tmp_path / "o1", "labelme")
    with pytest.raises(PackError, match=r"3 images of .* packed, but not one annotation.*"
                                        r"looked for images under an 'images' folder"):
        _pack(src, tmp_path / "o2", "yolo")
    for f in (src / "images").iterdir():
        f.unlink()
    with pytest.raises(PackError, match=r"all 3 images of .* were skipped \(looked for the "
                                        r"images listed in .*instances.json.*missing_image 3"):
        _pack(src, tmp_path / "o3")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()
    assert not list(tmp_path.glob(".o*"))  # no temp folder, no lock file left
    assert cli_main(["pack", str(src), str(tmp_path / "o4"), "-f", "coco", "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "nothing to pack" in err and "--allow-empty" in err
    assert cli_main(["pack", str(src), str(tmp_path / "o4"), "-f", "coco", "-q",
                     "--allow-empty"]) == 0
    assert len(Dataset(tmp_path / "o4")) == 0


# ----------------------------------------------------------------- malformed entries
def _coco_case(mutate):
    def make(root):
        data = _coco(root)
        mutate(data)
        return _write(root, data), "coco"
    return make


def _labelme_case(value):
    def make(root):
        write_dataset(root, "labelme", n_images=2, width=64, height=48, seed=0)
        p = root / "img_00001.json"
        d = json.loads(p.read_text())
        d["shapes"][0]["group_id"] = value
        p.write_text(json.dumps(d))
        return root, "labelme"
    return make


def _yolo_case(token):
    def make(root):
        write_dataset(root, "yolo", n_images=2, width=64, height=48, seed=0)
        p = root / "labels" / "train" / "00001.txt"
        lines = p.read_text().splitlines()
        lines[0] = " ".join([token] + lines[0].split()[1:])
        p.write_text("\n".join(lines) + "\n")
        return root, "yolo"
    return make


def _set_image(k, **kw):
    def mutate(d):
        for key, v in kw.items():
            if v is None:
                del d["images"][k][key]
            else:
                d["images"][k][key] = v
    return mutate


# name -> (make(root) -> (src, format), reason, text naming the file and entry)
MALFORMED = {
    "coco image without file_name": (_coco_case(_set_image(1, file_name=None)),
                                     "malformed_image", "ann.json, image entry 1"),
    "coco image without id": (_coco_case(_set_image(1, id=None)), "malformed_image",
                              "ann.json, image entry 1 (1.jpg): id None is not an integer"),
    "coco mixed id types": (_coco_case(_set_image(1, id="b")), "malformed_image",
                            "image entry 1 (1.jpg): id 'b' is not an integer"),
    "coco category without id": (
        _coco_case(lambda d: d["categories"].append({"name": "b"})), "malformed_category",
        "ann.json, category entry 1: id None is not an integer"),
    "coco annotation that is a list": (
        _coco_case(lambda d: d["annotations"].append([1, 2])), "malformed_annotation",
        "ann.json, annotation entry 3: is a list, not an object"),
    "coco keypoints: 5": (_coco_case(lambda d: d["annotations"][1].update(keypoints=5)),
                          "bad_keypoints", "1.jpg, annotation 2: keypoints 5 is not a list"),
    "labelme group_id list": (_labelme_case([1, 2]), "malformed_shape",
                              "img_00001.json, shape 0 (label"),
    "labelme group_id dict": (_labelme_case({"a": 1}), "malformed_shape",
                              "group_id {'a': 1} is not an integer or null"),
    "yolo class nan": (_yolo_case("nan"), "malformed_label",
                       "labels/train/00001.txt, line 1: class id 'nan' is not a non-negative"),
    "yolo class inf": (_yolo_case("inf"), "malformed_label",
                       "labels/train/00001.txt, line 1: class id 'inf'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_entry_is_skipped_and_counted(tmp_path, case):
    make, reason, text = MALFORMED[case]
    src, fmt = make(tmp_path / "src")
    s = _pack(src, tmp_path / "out", fmt)
    counts = {**s.skipped_images, **s.skipped_annotations}
    assert counts.get(reason, 0) >= 1, counts
    assert any(text in ln and reason in ln for ln in _lines(tmp_path / "out")), \
        _lines(tmp_path / "out")
    with pytest.raises(PackError, match="strict") as e:
        _pack(src, tmp_path / "strict", fmt, strict=True)
    assert text in str(e.value)


def test_nan_and_huge_numbers_in_yolo_never_make_billions_of_classes(tmp_path):
    write_dataset(tmp_path / "src", "yolo", n_images=2, width=64, height=48, seed=0)
    (tmp_path / "src" / "data.yaml").unlink()  # no class list: classes come from the ids
    p = tmp_path / "src" / "labels" / "train" / "00001.txt"
    lines = p.read_text().splitlines()
    lines[0] = " ".join(["7000000000"] + lines[0].split()[1:])
    p.write_text("\n".join(lines) + "\n")
    s = _pack(tmp_path / "src", tmp_path / "out", "yolo")
    assert s.skipped_annotations == {"unknown_label": 1}
    assert len(Dataset(tmp_path / "out").classes) < 10
    assert math.isfinite(s.time_s)

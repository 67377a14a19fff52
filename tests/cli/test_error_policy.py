"""The CLI's one error policy (fastload/cli/__init__.py), end to end: real ``python3 -m
fastload`` processes with this tree first on PYTHONPATH, real pipes, a real full disk.

- a failure is one line ``fastload COMMAND: message`` on stderr, exit 2, no traceback;
- a closed output pipe (``fastload info X | head -1``) is silent, exit 0;
- a full disk says so, and ``pack`` leaves no OUT behind;
- Ctrl-C is ``interrupted``, exit 130, and ``pack`` leaves no OUT behind.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fastload.packing import pack
from fastload.store import Manifest
from fastload.synth.datasets import write_dataset
from tests.helpers.env import ROOT

ENV = dict(os.environ, PYTHONPATH=str(ROOT))
FASTLOAD = [sys.executable, "-m", "fastload"]


def run(*args, **kw):
    return subprocess.run([*FASTLOAD, *map(str, args)], env=ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=300, **kw)


def assert_one_line_error(p, command, *words):
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastload {command}: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_dataset(root / "src", "coco", n_images=8, width=320, height=240, seed=1,
                  keypoints=True)
    pack(root / "src", root / "packed", "coco", shard_size=3, workers=1, progress=False)
    return root


def test_failures_are_one_line_exit_2(data, tmp_path):
    assert_one_line_error(run("info", tmp_path / "absent"), "info", "absent",
                          "no such dataset directory")
    assert_one_line_error(run("verify", tmp_path), "verify", "no manifest.json")
    assert_one_line_error(run("pack", tmp_path / "absent", tmp_path / "out", "-f", "coco", "-q"),
                          "pack", "no such file or directory")
    assert_one_line_error(run("pack", data / "src", data / "packed", "-f", "coco", "-q"),
                          "pack", "exists and is not empty", "--overwrite")
    assert not (tmp_path / "out").exists()


def test_a_pipe_closed_before_the_output_is_silent(data):
    """The reader is gone before fastload writes: its write fails with EPIPE for sure."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([*FASTLOAD, "info", str(data / "packed")], env=ENV, cwd=ROOT,
                           stdout=w, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(w)
    assert p.returncode == 0 and p.stderr == ""


def _head_1(dataset):
    """``fastload info DATASET | head -1`` as two real processes joined by a pipe."""
    info = subprocess.Popen([*FASTLOAD, "info", str(dataset)], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=info.stdout, stdout=subprocess.PIPE)
    info.stdout.close()  # head alone holds the read end now
    first, _ = head.communicate(timeout=300)
    err = info.stderr.read()
    info.wait(timeout=300)
    return info.returncode, err.decode(), first.decode()


def test_info_into_head_1(data, tmp_path):
    code, err, first = _head_1(data / "packed")
    assert (code, err) == (0, "") and first.startswith("dataset ")
    # an info longer than the pipe's buffer: fastload is still writing when head exits
    big = tmp_path / "big"
    big.mkdir()
    Manifest(source_format="coco", shards=[], keypoint_names=[f"keypoint_{k:05d}" for k in range(20000)],
             flip_pairs=[]).write(big)
    code, err, first = _head_1(big)
    assert (code, err) == (0, "") and first.startswith("dataset ")


def _unshare_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    p = subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True)
    return p.returncode == 0


@pytest.mark.skipif(not _unshare_ok(), reason="needs unshare --mount --map-root-user "
                                                "(a private tmpfs small enough to fill)")
def test_disk_full_during_pack_is_one_line_and_leaves_no_out(data, tmp_path):
    """pack onto a 64 KiB tmpfs (mounted in a private mount namespace, so nothing leaks)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=64k tmpfs {mnt} || exit 99\n"
              f"{sys.executable} -m fastload pack {data / 'src'} {mnt / 'out'} -f coco -q\n"
              f"code=$?\nls -A {mnt} >&2\nexit $code\n")
    p = subprocess.run(["unshare", "--mount", "--map-root-user", "bash", "-c", script], env=ENV,
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    if p.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    assert_one_line_error(p, "pack", "the disk is full", "free some space")
    # (ls -A printed nothing: neither OUT nor the temp folder is left on the full disk)


def test_ctrl_c_during_pack_is_one_line_and_leaves_no_out(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_dataset(src, "coco", n_images=400, width=64, height=48, seed=2)
    p = subprocess.Popen([*FASTLOAD, "pack", str(src), str(out), "-f", "coco", "-q",
                          "--shard-size", "20", "-j", "1"], env=ENV, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        tmps = list(tmp_path.glob(".out.fastload-tmp-*"))
        if tmps and (tmps[0] / "shard-00001.lmdb").exists():
            break
        time.sleep(0.005)
    if p.poll() is not None:
        pytest.skip("pack finished before it could be interrupted")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err.strip() == "interrupted" and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.fastload-*"))


def test_missing_optional_dependency_is_one_line_naming_the_extra(tmp_path):
    """`fastload pack --format masks` without scikit-image (the `masks` extra): one line that
    says what to install, exit 2, no OUT."""
    write_dataset(tmp_path / "src", "masks", n_images=2, seed=0)
    code = ("import sys; sys.modules['skimage'] = None  # as if not installed\n"
            "from fastload.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "pack", str(tmp_path / "src"),
                        str(tmp_path / "out"), "--format", "masks", "-q"], env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert_one_line_error(p, "pack", "fastload[masks]")
    assert not (tmp_path / "out").exists()

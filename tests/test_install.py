"""The installed package is self-contained: a wheel built from this tree, installed (not
editable) into a fresh virtual environment, runs ``fastload demo`` and ``fastload bench`` from
outside the source tree, with nothing of the checkout on the path.

The environment is created with ``--system-site-packages`` so that the dependencies (torch,
numba, ...) come from this interpreter's site-packages, and fastload is installed with
``--no-deps``: no network. That site-packages may hold an editable install of some other
checkout (a finder appended to ``sys.meta_path``); the environment's own copy must win,
which the test checks through ``fastload.__file__``.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# build outputs and caches that must not travel into the copy the wheel is built from
_NOT_COPIED = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".benchmarks", ".venv", "bench-out",
                                     "*.nbi", "*.nbc")

pytestmark = pytest.mark.slow  # about a minute: a wheel build and Numba's first compilation


def _run(cmd, cwd, env, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A virtual environment holding fastload installed from a wheel of this tree; returns
    (its bin folder, a folder outside the checkout, the environment for subprocesses)."""
    tmp = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    src = tmp / "src"  # building writes build/ and *.egg-info into the tree: use a copy
    shutil.copytree(ROOT, src, ignore=_NOT_COPIED)
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", wheels, src], cwd=tmp, env=env)
    (wheel,) = wheels.glob("fastload-*.whl")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv"],
         cwd=tmp, env=env)
    bin_dir = tmp / "venv" / "bin"
    # the system's pip, run by the environment's interpreter, installs into the environment
    _run([bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel],
         cwd=tmp, env=env)
    work = tmp / "elsewhere"
    work.mkdir()
    return bin_dir, work, env


def test_wheel_holds_only_the_package(venv):
    bin_dir, work, env = venv
    site = Path(_run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=work, env=env)[0].strip())
    tops = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert "fastload" in tops
    assert not tops & {"tests", "tools", "benchmarks", "docs"}, tops


def test_installed_copy_is_imported(venv):
    bin_dir, work, env = venv
    out, _ = _run([bin_dir / "python", "-c", "import fastload; print(fastload.__file__)"],
                  cwd=work, env=env)
    path = Path(out.strip()).resolve()
    assert path.is_relative_to((bin_dir.parent).resolve()), path
    assert not path.is_relative_to(ROOT), path


def test_demo_runs_from_the_wheel(venv):
    bin_dir, work, env = venv
    out, _ = _run([bin_dir / "fastload", "demo", "--n", "4", "--dir", work / "demo"], cwd=work,
                  env=env)
    assert "wrote 4 synthetic 640x480 images" in out
    assert "packed 4 images" in out
    assert "epoch 0: 4 images" in out and "epoch 1: 4 images" in out, out


def test_bench_runs_from_the_wheel(venv):
    """The rows run in their own processes: they too must import the installed copy."""
    bin_dir, work, env = venv
    out_dir = work / "bench-out"
    out, err = _run([bin_dir / "fastload", "bench", "--rows", "fastload-cpu,bound-lmdb",
                     "--seconds", "1", "--windows", "2", "--warmup", "0.2", "--num-images", "8",
                     "--batch-size", "4", "--size", "128", "--workers", "1",
                     "--cache", work / "cache", "--out", out_dir], cwd=work, env=env)
    res = json.loads((out_dir / "results.json").read_text())
    assert [r["row"] for r in res["rows"]] == ["fastload-cpu", "bound-lmdb"]
    assert all(r["status"] == "ok" for r in res["rows"]), res["rows"]
    for r in res["rows"]:
        assert Path(r["fastload"]).resolve().is_relative_to(bin_dir.parent.resolve()), r
    assert "| fastload-cpu |" in out and (out_dir / "report.md").exists()

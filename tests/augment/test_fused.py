"""The generated fused kernel: source splicing, equality with Numba's own inlining, the
on-disk cache of generated kernels."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import kernel_ops
from fastload.augment.fused import cache_dir, fused_kernel, kernel_source
from fastload.augment.ops import PIXEL_OPS
from fastload.augment.output import OUT_F16, OUT_F32, OUT_U8, norm_consts, output_target
from fastload.augment.params import sample_params
from fastload.augment.splice import SpliceError, splice
from fastload.augment.warp import inverse_2x3
from fastload.dtypes import output_numpy_dtype
from fastload.synth.scenes import make_scene

ROOT = Path(__file__).parents[2]
ALL_ON = dict(hflip_prob=0.5, rotate_deg=40, scale=0.3, translate=0.2, hue_deg=40,
              brightness=0.2, contrast=0.3, noise_sigma=(2.0, 10.0), shadow_prob=1.0,
              shadow_count=(1, 3), shadow_darkness=(0.3, 0.8))


def _kernel_run(spliced, img, p, cfg):
    out = np.empty((3,) + cfg.out_size, output_numpy_dtype(cfg.dtype))
    kind, dst = output_target(out, cfg)
    scale, offset = norm_consts(cfg)
    ops = kernel_ops(cfg, p)
    args = [a for op in ops for a in op.kernel_values(p, cfg, {})]
    fused_kernel(ops, kind, spliced)(img, inverse_2x3(p.matrix), float(cfg.pad_value), dst,
                                     scale, offset, np.zeros(1, np.float32), *args)
    return out


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_spliced_kernel_equals_numba_inlined_calls(dtype):
    """Pasting the stage functions as source must compute exactly what calling them does."""
    cfg = AugmentConfig(out_size=(37, 53), pad_value=20.0, dtype=dtype, **ALL_ON)
    ops = kernel_ops(cfg)
    assert [op.name for op in ops] == [op.name for op in PIXEL_OPS]
    kind = output_target(np.empty((3, 1, 1), output_numpy_dtype(dtype)), cfg)[0]
    assert fused_kernel(ops, kind) is not fused_kernel(ops, kind, spliced=False)
    rng = np.random.default_rng(1)
    for k in range(3):
        img = make_scene(rng, width=70, height=45, n_instances=3).image
        p = sample_params(cfg, 9, 0, k, 45, 70)
        a, b = _kernel_run(True, img, p, cfg), _kernel_run(False, img, p, cfg)
        assert a.tobytes() == b.tobytes()


def test_kernel_source_per_op_set():
    hue_only = kernel_source([op for op in PIXEL_OPS if op.name == "hue"], OUT_F32)
    assert "hue_hm" in hue_only and "noise" not in hue_only and "shadow" not in hue_only
    assert kernel_source(PIXEL_OPS, OUT_F32) == kernel_source(PIXEL_OPS, OUT_F32)
    none = kernel_source([], OUT_F32)
    assert "def fused(img, minv, pad, out, scale, offset, f32buf):" in none
    assert "warp__" in none and "store__" in none


def test_kernel_source_holds_only_the_store_of_its_output_kind():
    """A kernel compiles only the store path of its dtype (the float16 bit conversion is a
    third of a kernel's compile time)."""
    f32, f16, u8 = (kernel_source(PIXEL_OPS, k) for k in (OUT_F32, OUT_F16, OUT_U8))
    assert "f32bits_to_f16bits" in f16 and "f32bits_to_f16bits" not in f32 + u8
    assert "f32buf.view" in f16 and "f32buf.view" not in f32 + u8
    assert "int(r + 0.5)" in u8 and "int(r + 0.5)" not in f32 + f16
    assert "np.float32(r) * s0 + o0" in f32 and "* s0 + o0" not in u8
    with pytest.raises(ValueError, match="unknown output kind"):
        kernel_source(PIXEL_OPS, 7)


_SCRIPT = r"""
import json, time
import numpy as np
from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import augment_image, kernel_ops
from fastload.augment.fused import fused_kernel
from fastload.augment.params import sample_params
cfg = AugmentConfig.off(out_size=(24, 32), hue_deg=10, brightness=0.1)
img = np.full((20, 30, 3), 100, np.uint8)
p = sample_params(cfg, 0, 0, 0, 20, 30)
out = np.empty((3, 24, 32), np.float32)
t = time.perf_counter()
augment_image(img, p, cfg, out)
seconds = time.perf_counter() - t
k = fused_kernel(kernel_ops(cfg, p), 0)
print(json.dumps({"hits": sum(k.stats.cache_hits.values()),
                  "misses": sum(k.stats.cache_misses.values()),
                  "file": k.py_func.__code__.co_filename, "seconds": seconds,
                  "sum": float(out.sum())}))
"""


def test_generated_kernel_is_cached_on_disk(tmp_path):
    """A second process loads the compiled kernel from Numba's cache instead of compiling."""
    env = {**os.environ, "FASTLOAD_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("NUMBA_DISABLE_JIT", None)

    def run():
        r = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert Path(first["file"]).parent == tmp_path / "kernels"
    assert first["file"] == second["file"] and first["sum"] == second["sum"]
    assert first["misses"] >= 1 and first["hits"] == 0  # compiled
    assert second["hits"] >= 1 and second["misses"] == 0  # loaded
    assert second["seconds"] < first["seconds"]
    print("first call: compile %.2f s, cached %.3f s" % (first["seconds"], second["seconds"]))


def test_cache_dir_follows_fastload_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTLOAD_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "kernels" and cache_dir().is_dir()


# ------------------------------------------------------------------ splice
def _bad_two_returns(r, g, b, i, j, on):
    if on:
        return r, g, b
    return r, g, b


def _bad_assigns_constant(r, g, b, i, j, k):
    k = k + 1
    return r, g, b


def _bad_lambda(r, g, b, i, j, k):
    f = lambda x: x  # noqa: E731
    return r, g, b


def _bad_unknown(r, g, b, i, j, k):
    r = r + not_defined_anywhere  # noqa: F821
    return r, g, b


def _good(r, g, b, i, j, k):
    t = np.float64(k) * 2.0
    r = min(r + t, 255.0)
    return r, g, b


@pytest.mark.parametrize("func,match", [
    (_bad_two_returns, "only one return"), (_bad_assigns_constant, "assigns to its parameter 'k'"),
    (_bad_lambda, "Lambda"), (_bad_unknown, "unknown name 'not_defined_anywhere'")])
def test_splice_refuses_what_it_cannot_paste(func, match):
    with pytest.raises(SpliceError, match=match):
        splice(func, ["r", "g", "b", "i", "j", "x_k"], ["r", "g", "b"], "x", {"r", "g", "b"}, {})


def test_splice_renames_locals_params_and_globals():
    imports = {}
    lines = splice(_good, ["r", "g", "b", "i", "j", "op_k"], ["r", "g", "b"], "op",
                   {"r", "g", "b"}, imports)
    assert lines == ["op__t = op__np.float64(op_k) * 2.0", "r = min(r + op__t, 255.0)"]
    assert imports == {"op__np": "import numpy as op__np"}

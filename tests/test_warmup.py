"""fastload.warmup: the loader's first iteration compiles every kernel its batches use (each
once: no second specialization for a constant argument), a helper process shares a cold
compile through Numba's disk cache, and a second process compiles nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastload.augment.config import AugmentConfig
from fastload.targets.specs import DatasetInfo, FunctionTarget, resolve_targets
from fastload.warmup import loader_jobs, run_job, target_job

ROOT = Path(__file__).resolve().parents[1]

# In a new process (nothing compiled in memory; the disk cache may be warm or cold): build a
# loader, iterate (its warm-up), then list the specializations every fastload dispatcher
# gained while the batches ran. A specialization the warm-up missed (another dtype, layout,
# literal argument, kernel) is compiled or loaded during the batches and shows up here.
_LOADER_SCRIPT = r"""
import json, sys
from numba.core import types
from numba.core.registry import CPUDispatcher
from fastload.augment.config import AugmentConfig
from fastload.loader import DataLoader
from fastload.targets import specs
from tests.helpers.data import blob_dataset

def dispatchers():
    out = {}
    for name, mod in list(sys.modules.items()):
        if name.startswith("fastload"):  # the package and the generated fused kernels
            for v in list(vars(mod).values()):
                if isinstance(v, CPUDispatcher):
                    out[v.py_func.__module__ + "." + v.py_func.__qualname__] = v
    return out

def signatures():
    return {k: {str(s) for s in d.signatures} for k, d in dispatchers().items()}

cfg = AugmentConfig(out_size=(64, 64), **json.loads(sys.argv[1]))
targets = [t if isinstance(t, str) else getattr(specs, t[0])(**t[1])
           for t in json.loads(sys.argv[2])]
loader = DataLoader(blob_dataset(8), batch_size=4, device="cpu", augment=cfg, targets=targets,
                    num_threads=2, backend=sys.argv[3])
it = iter(loader)
before = signatures()
n = sum(1 for _ in it)
after = signatures()
new = {k: sorted(v - before.get(k, set())) for k, v in after.items() if v - before.get(k, set())}
# a helper compiled once for a constant argument and once more for a variable of its type
literal_twins = {k: [str(s) for s in d.signatures] for k, d in dispatchers().items()
                 if len({tuple(types.unliteral(t) for t in s) for s in d.signatures})
                 < len(d.signatures)}
print(json.dumps({"batches": n, "kernels": len(before), "new": new, "twins": literal_twins}))
"""


def _run(code, *args, env=None, timeout=900):
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("config,targets,backend", [
    ({}, ["centernet"], "cpu"),  # the defaults (shadow 30%, noise, hue, flip...)
    ({"dtype": "float16", "brightness": 0.2, "contrast": 0.2, "shadow_prob": 1.0},
     ["masks", "fcos", "keypoints"], "cpu"),
    ({"dtype": "uint8", "noise_sigma": [0.0, 0.0]}, [["MaskTarget", {"max_instances": 6}],
                                              ["CenterNetTarget", {"radius": "corrected"}]], "cpu"),
    ({"shadow_prob": 1.0}, ["centernet"], "dali"),  # DALI's CPU operators
])
def test_first_iteration_compiles_everything_the_batches_use(config, targets, backend):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    res = _run(_LOADER_SCRIPT, json.dumps(config), json.dumps(targets), backend)
    assert res["batches"] == 2 and res["kernels"] >= 5
    assert res["new"] == {}, f"compiled during the batches, not by the warm-up: {res['new']}"
    assert res["twins"] == {}, f"compiled once per constant argument: {res['twins']}"


_COLD_SCRIPT = r"""
import dataclasses, json
from fastload.augment.config import AugmentConfig
from fastload.targets.specs import DatasetInfo, resolve_targets
from fastload.warmup import loader_jobs, warm_up
specs = resolve_targets(["centernet"], DatasetInfo(num_classes=3))
report = warm_up(loader_jobs(AugmentConfig(out_size=(64, 64)), specs), helper=True)
print(json.dumps(dataclasses.asdict(report)))
"""


@pytest.mark.slow  # one full compile from an empty cache (15-40 s on 2 shared cores)
def test_cold_cache_is_shared_with_a_helper_and_reused_by_the_next_process(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
           "FASTLOAD_CACHE": str(tmp_path / "fastload"), "PYTHONPATH": str(ROOT)}
    env.pop("NUMBA_DISABLE_JIT", None)
    first = _run(_COLD_SCRIPT, env=env)
    assert first["errors"] == [] and first["helper_returncode"] == 0, first["helper_output"]
    assert first["here"][0] == "geometry" and first["by_helper"], first
    assert sorted(first["here"] + first["by_helper"]) == ["geometry", "image", "target"]
    assert first["compiled_here"] > 0
    # what the helper compiled came from the disk cache, not from compiling it again here
    assert first["compiled_after_helper"] == 0, first
    second = _run(_COLD_SCRIPT, env=env)
    assert second["errors"] == [] and second["compiled_here"] == 0
    assert second["helper_returncode"] is None and second["by_helper"] == []
    assert second["here"] == ["geometry", "target", "image"]


def test_jobs_of_a_loader_configuration():
    cfg = AugmentConfig(out_size=(64, 96))
    specs = resolve_targets(["centernet", "masks", FunctionTarget(lambda inst, size: {})],
                            DatasetInfo(num_classes=2, classes=["a", "b"]))
    jobs = loader_jobs(cfg, specs)
    assert [j["kind"] for j in jobs] == ["geometry", "target", "target", "image"]
    assert jobs[1]["spec"] == "CenterNetTarget" and jobs[1]["fields"]["num_classes"] == 2
    assert jobs[1]["out_size"] == [64, 96] and jobs[3]["config"] == cfg.to_dict()
    assert target_job(specs[2], cfg.out_size) is None  # a user function: nothing to warm
    assert loader_jobs(cfg, specs, "dali", "cuda")[-1] == {"kind": "dali", "gpu": True,
                                                          "config": cfg.to_dict()}
    assert [j["kind"] for j in loader_jobs(cfg, specs, "my-backend")] == \
        ["geometry", "target", "target"]
    json.dumps(jobs)  # what the helper process is given
    with pytest.raises(ValueError, match="unknown warm-up job"):
        run_job({"kind": "nope"})


def test_warmup_cli(capsys):
    from fastload.cli import main as cli_main
    assert cli_main(["warmup", "--targets", "centernet", "--one-process"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("warmup: ") and "failed" not in out

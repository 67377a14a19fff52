"""The loader on a GPU (skipped without CUDA; ``tools/gpu_check.sh tests`` runs them):
batches on the loader's device that match the CPU backend, the stream hand-off, DALI's
prefetch in a steady loop, no CUDA context on any other device (nor any at all with
``device="cpu"``), and two ``torchrun`` processes sharing one GPU.

CUDA contexts are checked with the driver API (``cuDevicePrimaryCtxGetState`` through
ctypes): torch and DALI both use each device's primary context, and the check works inside
containers where ``nvidia-smi`` cannot see the process's pid. Each check runs in a fresh
subprocess, since this pytest process may hold contexts from other tests.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fastload.augment.config import AugmentConfig
from fastload.loader import DataLoader
from fastload.record import Instance, Record
from fastload.synth.scenes import encode_png, make_scene
from tests.helpers.data import BlobDataset, blob_dataset, packed_dataset
from tests.helpers.env import requires_gpu

ROOT = Path(__file__).resolve().parents[2]
ALL_ON = AugmentConfig(out_size=(72, 96), hue_deg=30, brightness=0.2, contrast=0.3,
                       shadow_prob=1.0, noise_sigma=(2, 10), dtype="uint8")
TARGETS = ["centernet", "masks"]

pytestmark = requires_gpu


def png_dataset(n=12, seed=0, width=96, height=72) -> BlobDataset:
    """Records with PNG images: every decoder gives the same pixels, so the comparison of
    backends is about the augmentation only."""
    rng = np.random.default_rng(seed)
    blobs = []
    for i in range(n):
        scene = make_scene(rng, width, height)
        insts = []
        for s in scene.instances:
            pts = np.concatenate(s.polygons)
            box = np.array([*pts.min(0), *pts.max(0)], np.float32)
            insts.append(Instance(label=s.label, polygons=s.polygons, bbox=box,
                                  keypoints=s.keypoints))
        blobs.append(Record.from_instances(i, f"img_{i:04d}.png", encode_png(scene.image), "png",
                                           height, width, insts).encode())
    return BlobDataset(blobs)


def by_index(loader):
    out = {}
    for b in loader:
        for j, i in enumerate(b["index"].tolist()):
            out[i] = {k: v[j].clone() for k, v in b.items()}
    return out


@pytest.mark.parametrize("images", ["png", "jpeg"])
def test_cuda_batches_match_the_cpu_backend(images):
    """DALI on cuda:0, every op on (noise included): every tensor on cuda:0, annotations and
    targets identical to the CPU backend's, images within 2 levels (uint8) for PNG records;
    JPEG records add the difference between nvJPEG and libjpeg-turbo (a few levels at chroma
    edges), so there only the bulk is checked (the noise is the same noise). A sample's image
    does not depend on its batch: batch sizes 3 and 5 give identical images."""
    ds = png_dataset() if images == "png" else blob_dataset(12)
    kw = dict(shuffle=True, seed=5, augment=ALL_ON, targets=TARGETS, num_threads=4)
    gpu = by_index(DataLoader(ds, batch_size=4, device="cuda:0", backend="dali", **kw))
    gpu3 = by_index(DataLoader(ds, batch_size=3, device="cuda:0", backend="dali", **kw))
    gpu5 = by_index(DataLoader(ds, batch_size=5, device="cuda:0", backend="dali", **kw))
    cpu = by_index(DataLoader(ds, batch_size=4, device="cpu", backend="cpu", **kw))
    assert sorted(gpu) == sorted(gpu3) == sorted(gpu5) == sorted(cpu) == list(range(len(ds)))
    diffs = []
    for i in cpu:
        g, c = gpu[i], cpu[i]  # the same batches: the same padding of the instance keys
        assert all(v.device == torch.device("cuda", 0) for v in g.values())
        assert torch.equal(g["image"], gpu3[i]["image"]), i
        assert torch.equal(g["image"], gpu5[i]["image"]), i
        for k in c:
            if k != "image":
                assert torch.equal(g[k].cpu(), c[k]), k
        diffs.append((g["image"].cpu().int() - c["image"].int()).abs())
    d = torch.stack(diffs).float()
    print(f"cuda:0 DALI vs CPU backend ({images}): max {d.max():.0f} mean {d.mean():.3f} "
          f"within 2: {(d <= 2).float().mean():.5f}")
    if images == "png":
        assert d.max() <= 2 and d.mean() < 0.5
    else:  # independent noise (sigma 2..10) would give a mean difference of about 6 levels
        assert d.median() <= 1 and d.mean() < 2.0


def test_hand_off_on_a_side_stream_prefetch_and_held_outputs():
    """A training loop on a non-default stream gets finished data (the loader's stream is
    waited on, no host sync needed); DALI's prefetch keeps working over several epochs with
    a partial last batch; the DALI outputs kept for unfinished copies stay bounded."""
    ds = png_dataset(11)
    cfg = AugmentConfig(out_size=(64, 64))
    ld = DataLoader(ds, batch_size=4, shuffle=True, seed=3, augment=cfg, device="cuda:0",
                    backend="dali", targets=["centernet"])
    ref = DataLoader(ds, batch_size=4, shuffle=True, seed=3, augment=cfg, device="cpu",
                     backend="dali", targets=["centernet"])
    side = torch.cuda.Stream()
    for epoch in range(3):
        ld.set_epoch(epoch)
        ref.set_epoch(epoch)
        with torch.cuda.stream(side):
            got = [{k: (v * 1).cpu() for k, v in b.items()} for b in ld]  # work on `side`
        want = [dict(b) for b in ref]
        assert [len(b["index"]) for b in got] == [4, 4, 3]
        for g, w in zip(got, want):
            assert torch.equal(g["index"], w["index"])
            assert (g["image"] - w["image"]).abs().max() * max(cfg.std) <= 2.01
    aug = ld._resources.backend._aug
    assert aug.depth == 2 and len(aug._held) <= aug.depth + aug.HELD_EXTRA


CONTEXT_PROBE = """
import ctypes, json, sys
sys.path[:0] = [{root!r}]

def active_contexts():
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    n = ctypes.c_int()
    cuda.cuDeviceGetCount(ctypes.byref(n))
    out = []
    for i in range(n.value):
        dev, flags, active = ctypes.c_int(), ctypes.c_uint(), ctypes.c_int()
        cuda.cuDeviceGet(ctypes.byref(dev), i)
        cuda.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active))
        if active.value:
            out.append(i)
    return out
"""

LOADER_RUN = CONTEXT_PROBE + """
import torch
from fastload import AugmentConfig, DataLoader
ld = DataLoader({data!r}, batch_size=4, shuffle=True, device={device!r}, backend="dali",
                augment=AugmentConfig(out_size=(64, 64), noise_sigma=(1, 4)), targets=["centernet"])
devices = set()
for b in ld:
    devices |= {{str(v.device) for v in b.values()}}
print(json.dumps({{"devices": sorted(devices), "contexts": active_contexts(),
                  "torch_initialized": torch.cuda.is_initialized(),
                  "count": torch.cuda.device_count()}}))
"""


def _probe(script, env=None):
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env={**os.environ, **(env or {})})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_device_cpu_creates_no_cuda_context(tmp_path):
    """DataLoader(device="cpu", backend="dali") on a machine with a GPU: DALI's CPU
    operators, and no CUDA context on any device."""
    data = packed_dataset(tmp_path / "d", n=8, keypoints=False)
    got = _probe(LOADER_RUN.format(root=str(ROOT), data=str(data), device="cpu"))
    assert got["devices"] == ["cpu"]
    assert got["contexts"] == [] and not got["torch_initialized"], got


def test_only_the_loaders_device_has_a_context(tmp_path):
    """device="cuda:N": the process has a CUDA context on N and on no other device (the
    producer thread, DALI, the noise field and the hand-off all stay on N). On a one-GPU
    machine N = 0; with more GPUs the last one is used (a stray context would show on 0)."""
    data = packed_dataset(tmp_path / "d", n=8, keypoints=False)
    last = torch.cuda.device_count() - 1
    got = _probe(LOADER_RUN.format(root=str(ROOT), data=str(data), device=f"cuda:{last}"))
    assert got["devices"] == [f"cuda:{last}"]
    assert got["contexts"] == [last], got
    if last > 0:  # also with the device chosen by CUDA_VISIBLE_DEVICES (it becomes cuda:0)
        got = _probe(LOADER_RUN.format(root=str(ROOT), data=str(data), device="cuda:0"),
                     env={"CUDA_VISIBLE_DEVICES": str(last)})
        assert got["count"] == 1 and got["contexts"] == [0], got


TORCHRUN = CONTEXT_PROBE + """
import os, torch
import torch.distributed as dist
dist.init_process_group("gloo")  # NCCL refuses two ranks on one GPU; only ranks are needed
from fastload import AugmentConfig, DataLoader
ld = DataLoader({data!r}, batch_size=2, shuffle=True, seed=3, device="cuda:0",
                augment=AugmentConfig(out_size=(32, 32)))
out = {{"rank": ld.rank, "world_size": ld.world_size, "backend": ld.backend,
        "device": str(ld.device), "epochs": [], "tensor_devices": []}}
for epoch in range(2):
    ld.set_epoch(epoch)
    idx = []
    for b in ld:
        idx += b["index"].tolist()
        out["tensor_devices"] += sorted({{str(v.device) for v in b.values()}})
    out["epochs"].append(idx)
out["contexts"] = active_contexts()
with open(os.path.join({outdir!r}, "rank%d.json" % ld.rank), "w") as f:
    json.dump(out, f)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_torchrun_two_processes_share_one_gpu(tmp_path):
    """torchrun --nproc_per_node=2, both processes on cuda:0 (one GPU): the DALI backend,
    disjoint shares covering the dataset (plus the one documented pad), every tensor on
    cuda:0, and each process's only CUDA context on device 0."""
    n = 9
    data = packed_dataset(tmp_path / "d", n=n, width=64, height=48, keypoints=False)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TORCHRUN.format(root=str(ROOT), data=str(data),
                                                      outdir=str(tmp_path))))
    r = subprocess.run(["torchrun", "--nproc_per_node=2", "--standalone", str(script)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert [x["rank"] for x in ranks] == [0, 1] and all(x["world_size"] == 2 for x in ranks)
    for x in ranks:
        assert x["backend"] == "dali" and x["device"] == "cuda:0"
        assert set(x["tensor_devices"]) == {"cuda:0"}
        assert x["contexts"] == [0]
    for e in range(2):
        a, b = (x["epochs"][e] for x in ranks)
        assert len(a) == len(b) == 5
        assert set(a + b) == set(range(n)) and len(a + b) - len(set(a + b)) == 1
        assert not set(a) & set(b[:-1])

"""Where the time of a fastload batch goes, and how long a training step waits for data.

    python3 tools/profile_loader.py --device cuda [--data PACKED] [--batch-size 48]
                                     [--model resnet50] [--steps 30] [--out profile.txt]

Without ``--data`` a synthetic COCO dataset (256 JPEGs 640x480, fastload.synth) is written and
packed into a temp folder. The loader runs with all augmentations and CenterNet targets.

1. Data wait: a training loop of ``--steps`` steps, each ``next(loader)`` then a real forward and
   backward of ``--model`` (torchvision's resnet50 by default, bf16 autocast on CUDA; ``none``: no
   model) on the batch. On CUDA the wait is measured with events around ``next()`` on the
   training stream, so GPU work queued by the step is not counted as data wait. Reported: step
   time, time blocked in ``next()`` and its fraction.
2. Profile: the same loop under ``torch.profiler`` (CPU and CUDA activities) for a few steps;
   the tables of the busiest ops by self CUDA time and by CPU time, and the loader's own threads'
   share.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _dataset(tmp, n):
    from fastload.packing import pack
    from fastload.synth import write_dataset
    root = Path(tmp)
    write_dataset(root / "src", "coco", n_images=n, seed=0)
    pack(root / "src", root / "packed", "coco", progress=False)
    return root / "packed"


def _model(name, device):
    import torch
    if name == "none":
        return None, None
    import torchvision
    m = getattr(torchvision.models, name)(num_classes=80).to(device)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    return m, opt


def _step(model, opt, batch, device):
    import torch
    if model is None:
        return
    x = batch["image"]
    if x.dtype != torch.float32:
        x = x.float()
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = model(x).float().logsumexp(1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv=None) -> int:
    import torch
    from fastload import AugmentConfig, DataLoader
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="packed dataset (default: a synthetic one)")
    ap.add_argument("--images", type=int, default=256, help="synthetic images (default 256)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default=None, help="image backend (default: the device's)")
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default="resnet50", help="torchvision model name, or none")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--out", default="profile.txt")
    a = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="fastload-profile-")  # removed at exit
    data = a.data or _dataset(tmp.name, a.images)
    device = torch.device(a.device)
    loader = DataLoader(str(data), batch_size=a.batch_size, shuffle=True, drop_last=True,
                        augment=AugmentConfig(out_size=(a.size, a.size)), targets=["centernet"],
                        device=a.device, backend=a.backend, num_threads=a.threads)
    model, opt = _model(a.model, device)
    lines = [f"# tools/profile_loader.py {' '.join(argv if argv is not None else sys.argv[1:])}",
             f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}),"
             f" backend {loader.backend}, threads {loader.num_threads}, batch {a.batch_size},"
             f" {a.size}x{a.size}, model {a.model}, data {data} ({len(loader.dataset)} images)"]

    def batches():
        e = 0
        while True:
            loader.set_epoch(e)
            yield from loader
            e += 1

    it = batches()
    for _ in range(3):  # warm-up: compilation, DALI/CUDA init, cudnn autotune
        _step(model, opt, next(it), device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)

    waits, steps = [], []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        if device.type == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            tw = time.perf_counter()
            b = next(it)
            waits.append(time.perf_counter() - tw)
            e0.record()
            _step(model, opt, b, device)
            e1.record()
            e1.synchronize()
        else:
            tw = time.perf_counter()
            b = next(it)
            waits.append(time.perf_counter() - tw)
            _step(model, opt, b, device)
        steps.append(time.perf_counter() - t0)
    total = sum(steps)
    lines += ["", "## data wait",
              f"steps {a.steps}: step median {statistics.median(steps) * 1e3:.1f} ms, "
              f"next() median {statistics.median(waits) * 1e3:.2f} ms, "
              f"data wait {sum(waits) / total * 100:.2f}% of the loop "
              f"({a.steps * a.batch_size / total:.0f} images/s)"]

    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(a.profile_steps):
            _step(model, opt, next(it), device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    ka = prof.key_averages()
    if device.type == "cuda":
        lines += ["", "## busiest ops by self CUDA time", ka.table(sort_by="self_cuda_time_total",
                                                                     row_limit=25)]
    lines += ["", "## busiest ops by CPU time", ka.table(sort_by="cpu_time_total", row_limit=25)]
    stats = getattr(loader, "stats", {})
    lines += ["", f"loader stats: { {k: v for k, v in stats.items() if k != 'skipped_samples'} }"]
    loader.close()
    text = "\n".join(lines) + "\n"
    Path(a.out).write_text(text)
    print("\n".join(lines[:6]))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

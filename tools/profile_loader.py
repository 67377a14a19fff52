"""Where the time of a fastload batch goes, and how long a training step waits for data.

    python3 tools/profile_loader.py --device cuda [--data PACKED] [--batch-size 48]
                                     [--model resnet50] [--steps 30] [--out profile.txt]
                                     [--hw-decoder-load X] [--hw-sweep default,0,1]
                                     [--prefetch-depth 2] [--depth-sweep 1,2]

Without ``--data`` a synthetic COCO dataset (256 JPEGs 640x480, fastload.synth) is written and
packed into a temp folder. The loader runs with all augmentations and CenterNet targets.

1. Data wait: a training loop of ``--steps`` steps, each ``next(loader)`` then a forward and
   backward of ``--model`` on the batch (bf16 autocast on CUDA), ending with a synchronize
   (like a loop that logs ``loss.item()`` every step). ``--model``: a torchvision model name
   (default resnet50 when torchvision is installed), ``convnet`` (a plain-torch ResNet-like
   stack, the default without torchvision), or ``none``. Reported: step time, the time
   blocked in ``next()`` and its fraction of the loop, and the GPU time of the step (CUDA
   events around it).
2. The hand-off copy: the DALI backend copies each batch's images once, device to device,
   into a torch-owned tensor (fastload/augment/dali.py); its cost is measured on a tensor of
   the batch's shape (CUDA events) and given per batch and as a fraction of the step.
3. Profile: the same loop under ``torch.profiler`` (CPU and CUDA activities) for a few steps;
   the tables of the busiest ops by self CUDA time and by CPU time.
4. Sweeps (CUDA with the DALI backend), loader-only throughput (no model): each
   ``hw_decoder_load`` of ``--hw-sweep`` (``default`` = DALI's own, 0.65 in DALI 2.4; 0 = no
   hardware JPEG decoder; 1 = every JPEG on it), and each DALI prefetch depth of
   ``--depth-sweep`` (1 = one batch at a time, 2 = batch k + 1 submitted before batch k is
   collected). ``--hw-decoder-load`` / ``--prefetch-depth`` set the values of sections 1-3.
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


def _convnet(num_classes=80):
    """A plain-torch ResNet-like network (no torchvision needed): stride-2 stages of
    conv-bn-relu blocks, about a third of resnet50's compute at 512x512."""
    import torch.nn as nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    chans = [3, 64, 128, 256, 512, 512]
    layers = [block(a, b, 2) for a, b in zip(chans[:-1], chans[1:])]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


def _model(name, device):
    import torch
    if name == "none":
        return None, None, "none"
    if name == "convnet":
        m = _convnet()
    else:
        try:
            import torchvision
        except ImportError:
            if name != "resnet50":
                raise
            name, m = "convnet (torchvision is not installed)", _convnet()
        else:
            m = getattr(torchvision.models, name)(num_classes=80)
    m = m.to(device)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    return m, opt, name


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


def _backend_name(hw, depth=2):
    """The DALI backend with ``hw_decoder_load=hw`` and ``prefetch_depth=depth`` registered
    under a name ("dali" for the defaults)."""
    if hw is None and depth == 2:
        return "dali"
    from fastload.loader.backends import DaliBackend, backend_names, register_backend
    name = f"dali-hw{'default' if hw is None else f'{hw:g}'}-depth{depth}"
    if name not in backend_names():
        register_backend(name, lambda ctx: DaliBackend(ctx, hw_decoder_load=hw,
                                                       prefetch_depth=depth),
                         f"DALI, hw_decoder_load={hw}, prefetch_depth={depth}")
    return name


def _hw_value(text):
    return None if text in ("default", "none", "") else float(text)


def _batches(loader):
    e = 0
    while True:
        loader.set_epoch(e)
        yield from loader
        e += 1


def _sweep(a, data, device, title, variants):
    """Loader-only images/s for each (label, hw_decoder_load, prefetch depth) variant."""
    import torch
    from fastload import AugmentConfig, DataLoader
    lines = ["", f"## {title}, loader only, no model"]
    for label, hw, depth in variants:
        ld = DataLoader(str(data), batch_size=a.batch_size, shuffle=True, drop_last=True,
                        augment=AugmentConfig(out_size=(a.size, a.size)), targets=["centernet"],
                        device=a.device, backend=_backend_name(hw, depth), num_threads=a.threads)
        it = _batches(ld)
        for _ in range(3):
            next(it)
        torch.cuda.synchronize(device)
        n, t0 = a.sweep_batches, time.perf_counter()
        for _ in range(n):
            b = next(it)
        b["image"].sum().item()  # the last batch is finished
        dt = time.perf_counter() - t0
        lines.append(f"{label}: {n * a.batch_size / dt:.0f} images/s "
                     f"({dt / n * 1e3:.1f} ms per batch)")
        ld.close()
    return lines


def _copy_cost(image, steps_ms):
    """ms per device-to-device copy of a tensor like ``image`` (the hand-off copy)."""
    import torch
    x = image.clone()
    dst = torch.empty_like(x)
    dst.copy_(x)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(20):
        dst.copy_(x)
    e1.record()
    e1.synchronize()
    ms = e0.elapsed_time(e1) / 20
    mb = x.numel() * x.element_size() / 2 ** 20
    return (f"hand-off copy of the images ({tuple(x.shape)} {x.dtype}, {mb:.0f} MiB): "
            f"{ms:.3f} ms per batch, {ms / steps_ms * 100:.2f}% of the median step")


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
    ap.add_argument("--model", default="resnet50",
                    help="torchvision model name, convnet (plain torch), or none")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--hw-decoder-load", type=_hw_value, default=None,
                    help="DALI's hardware JPEG decoder share for sections 1-3 (default: DALI's)")
    ap.add_argument("--hw-sweep", default="default,0,1",
                    help="hw_decoder_load values to compare, comma-separated ('' to skip)")
    ap.add_argument("--prefetch-depth", type=int, default=2,
                    help="DALI prefetch depth for sections 1-3 (1: one batch at a time)")
    ap.add_argument("--depth-sweep", default="1,2",
                    help="DALI prefetch depths to compare, loader only ('' to skip)")
    ap.add_argument("--sweep-batches", type=int, default=20)
    ap.add_argument("--out", default="profile.txt")
    a = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="fastload-profile-")  # removed at exit
    data = a.data or _dataset(tmp.name, a.images)
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    backend = a.backend
    if cuda and backend in (None, "dali"):
        backend = _backend_name(a.hw_decoder_load, a.prefetch_depth)
    loader = DataLoader(str(data), batch_size=a.batch_size, shuffle=True, drop_last=True,
                        augment=AugmentConfig(out_size=(a.size, a.size)), targets=["centernet"],
                        device=a.device, backend=backend, num_threads=a.threads)
    model, opt, model_name = _model(a.model, device)
    lines = [f"# tools/profile_loader.py {' '.join(argv if argv is not None else sys.argv[1:])}",
             f"device {device} ({torch.cuda.get_device_name(device) if cuda else 'CPU'}),"
             f" backend {loader.backend}, threads {loader.num_threads}, batch {a.batch_size},"
             f" {a.size}x{a.size}, model {model_name}, data {data} ({len(loader.dataset)} images)"]

    it = _batches(loader)
    for _ in range(3):  # warm-up: compilation, DALI/CUDA init, cudnn autotune
        _step(model, opt, next(it), device)
    if cuda:
        torch.cuda.synchronize(device)

    waits, steps, gpu_ms = [], [], []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        b = next(it)
        waits.append(time.perf_counter() - t0)
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            _step(model, opt, b, device)
            e1.record()
            e1.synchronize()
            gpu_ms.append(e0.elapsed_time(e1))
        else:
            _step(model, opt, b, device)
        steps.append(time.perf_counter() - t0)
    total = sum(steps)
    step_ms = statistics.median(steps) * 1e3
    lines += ["", "## data wait",
              f"steps {a.steps}: step median {step_ms:.1f} ms, "
              f"next() median {statistics.median(waits) * 1e3:.2f} ms, "
              f"data wait {sum(waits) / total * 100:.2f}% of the loop "
              f"({a.steps * a.batch_size / total:.0f} images/s)"]
    if cuda:
        lines.append(f"GPU time of the step (events): median {statistics.median(gpu_ms):.1f} ms")
        lines.append(_copy_cost(b["image"], step_ms))

    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(a.profile_steps):
            _step(model, opt, next(it), device)
        if cuda:
            torch.cuda.synchronize(device)
    ka = prof.key_averages()
    if cuda:
        lines += ["", "## busiest ops by self CUDA time", ka.table(sort_by="self_cuda_time_total",
                                                                     row_limit=25)]
    lines += ["", "## busiest ops by CPU time", ka.table(sort_by="cpu_time_total", row_limit=25)]
    stats = loader.stats
    lines += ["", f"loader stats: { {k: v for k, v in stats.items() if k != 'skipped_samples'} }"]
    loader.close()
    if cuda and a.backend in (None, "dali"):
        hws = [_hw_value(v.strip()) for v in a.hw_sweep.split(",") if v.strip()]
        if hws:
            lines += _sweep(a, data, device, "DALI hardware JPEG decoder share (hw_decoder_load)",
                            [(f"hw_decoder_load {'default' if hw is None else f'{hw:g}'}", hw,
                              a.prefetch_depth) for hw in hws])
        depths = [int(v) for v in a.depth_sweep.split(",") if v.strip()]
        if depths:
            lines += _sweep(a, data, device, "DALI prefetch depth (producer look-ahead = depth - 1)",
                            [(f"prefetch depth {d}", a.hw_decoder_load, d) for d in depths])
    text = "\n".join(lines) + "\n"
    Path(a.out).write_text(text)
    print("\n".join(lines[:9]))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

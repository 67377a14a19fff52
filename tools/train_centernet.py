"""Train a small CenterNet on a packed dataset, fed by fastload's loader or by torch's, and measure
whether the training loop waits for data and whether it learns the same.

Compare the two loaders (same data, augmentation, batch size and seed), back to back:

    PYTHONPATH=. python3 tools/train_centernet.py --loader fastload --out runs/fastload
    PYTHONPATH=. python3 tools/train_centernet.py --loader torch --out runs/torch
    python3 tools/plot_train_curves.py runs/fastload runs/torch --out curves.png

The model: a plain-torch convolutional encoder-decoder (stride 4 to 32 and back to 4, skip
connections; ``--width`` channels at stride 4, doubling per level) with CenterNet's three heads
at stride 4: ``hm`` (class heatmaps, focal loss), ``wh`` (box size in map cells, L1) and
``reg`` (center offset inside the cell, L1), weighted 1 / 0.1 / 1 as in "Objects as Points"
(Zhou et al. 2019). Adam, constant ``--lr``.

The loaders (``--loader``), the same ``AugmentConfig(out_size=(size, size))`` (fastload's
defaults: flip, rotate, scale, translate, hue, shadow, noise), batch size, seed, and
``--workers`` (fastload threads / torch worker processes):

- ``fastload``: ``fastload.DataLoader(..., targets=["centernet"], device=...)``; batches arrive
  on the device;
- ``torch``: ``torch.utils.data.DataLoader`` with albumentations (OpenCV) and NumPy CenterNet
  targets (``fastload.bench.albumentations_baseline.albumentations_loader``, the peer of
  ``fastload bench``), with ``persistent_workers`` (without them each epoch would start its
  workers again) and ``pin_memory`` on CUDA; batches copied with ``.to(device)``.

Both loops are ``for epoch: set_epoch(epoch); for batch in loader`` (drop_last, shuffled) until
``--steps`` steps. The first batch of each loader is checked against the same layout (keys,
shapes, dtypes) of the targets the loss reads.

Per step: ``wait_s`` = time blocked in ``next()`` plus ``.to(device, non_blocking=True)``
(``time.perf_counter``; on CUDA the torch loader's pinned copy itself runs on the stream,
before the step's events); ``step_s`` = the whole step, ending with reading the losses back
(``.tolist()``, as a loop that logs its loss every step does), so ``step_s - wait_s`` is the
compute. On CUDA, CUDA
events around forward + backward + optimizer step give the GPU time of the step (``gpu_s``),
so GPU work queued earlier is not counted as data wait; GPU idle = ``1 - NVML utilization``
(``torch.cuda.utilization`` sampled every 0.2 s on a thread, when pynvml is installed: it
counts any process's kernels), else ``1 - sum(gpu_s) / sum(step_s)`` (an upper bound of
the busy time: gaps between kernels inside the step count as busy).

Output: one line every ``--log-every`` steps, and last, one JSON object: ``loader``,
``device``, ``steps``, ``batch_size``, ``first_loss`` / ``last_loss`` (mean total loss over the
first / last ``loss_window`` = ``max(1, min(20, steps // 5))`` steps), ``images_per_s``,
``data_wait`` (sum of wait / sum of step time) and ``gpu_idle`` (``null`` on CPU) over the steps
after the first ``--warmup`` (fastload compiles its Numba kernels on a first run, 20-40 s;
torch starts its workers), ``seconds`` (the whole loop, warm-up included), and
``step_s_median`` (the median step time after the warm-up: on a shared machine, bursts of
other processes' work move the sums far more than the median), ``size``, ``workers``,
``warmup``, ``loss_window``, ``gpu_idle_source``, ``data``.
``--out DIR``: ``DIR/steps.csv`` (step, epoch, loss, hm, wh, reg, step_s, wait_s, gpu_s) and
``DIR/summary.json`` (the JSON line).

Data (``--data``): a packed dataset (``fastload pack``). Default: ``../shared/data/coco128-seg``
beside the checkout (YOLO-seg, 128 COCO photos), else 128 synthetic 640x480 scenes
(``fastload.synth``), packed once into ``--cache`` (``$FASTLOAD_CACHE`` or
``~/.cache/fastload``, under ``train/``) and reused.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
STRIDE = 4
LOSS_WEIGHTS = {"hm": 1.0, "wh": 0.1, "reg": 1.0}
TARGET_KEYS = ("hm", "wh", "reg", "ind", "reg_mask")
CSV_FIELDS = ("step", "epoch", "loss", "hm", "wh", "reg", "step_s", "wait_s", "gpu_s")


# ------------------------------------------------------------------------------ the model
def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CenterNet(nn.Module):
    """Encoder at strides 4, 8, 16, 32 (``width`` x 1, 2, 4, 8 channels), decoder back to
    stride 4 (upsample, concatenate the skip, conv), three heads: ``hm`` (logits), ``wh``,
    ``reg``. The ``hm`` bias starts at -2.19 (sigmoid 0.1), CenterNet's initialization."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(3, w // 2, 2), conv_bn(w // 2, w, 2), conv_bn(w, w))
        self.down = nn.ModuleList(nn.Sequential(conv_bn(a, b, 2), conv_bn(b, b))
                                  for a, b in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)))
        self.up = nn.ModuleList(conv_bn(a + b, b)
                                for a, b in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w)))
        self.heads = nn.ModuleDict({name: nn.Sequential(conv_bn(w, w), nn.Conv2d(w, n, 1))
                                    for name, n in (("hm", num_classes), ("wh", 2), ("reg", 2))})
        nn.init.constant_(self.heads["hm"][-1].bias, -2.19)

    def forward(self, x):
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.up:
            skip = skips.pop()
            y = up(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return {name: head(y) for name, head in self.heads.items()}


# ------------------------------------------------------------------------------ the losses
def focal_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (``_neg_loss``, alpha 2, beta 4) on the heatmap:
    sigmoid clamped to [1e-4, 1 - 1e-4]; positives where ``gt == 1``; summed, divided by the
    number of positives (the negative term alone when there are none)."""
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg = 1.0 - pos
    pos_loss = (torch.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred ** 2 * (1 - gt) ** 4 * neg).sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def reg_l1_loss(pred: torch.Tensor, ind: torch.Tensor, mask: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
    """CenterNet's ``RegL1Loss``: ``pred`` (B, 2, h, w) read at the objects' cells ``ind``
    (B, K), L1 against ``target`` (B, K, 2) where ``mask`` (B, K), summed over both
    components, divided by the number of masked components (+ 1e-4)."""
    b, c = pred.shape[:2]
    feat = pred.reshape(b, c, -1).permute(0, 2, 1)
    feat = feat.gather(1, ind.unsqueeze(2).expand(-1, -1, c))
    m = mask.unsqueeze(2).expand_as(feat).float()
    return F.l1_loss(feat * m, target * m, reduction="sum") / (m.sum() + 1e-4)


def centernet_loss(out: dict, batch: dict):
    """``(total, parts)``: the weighted sum (:data:`LOSS_WEIGHTS`) and the three losses."""
    parts = {"hm": focal_loss(out["hm"], batch["hm"]),
             "wh": reg_l1_loss(out["wh"], batch["ind"], batch["reg_mask"], batch["wh"]),
             "reg": reg_l1_loss(out["reg"], batch["ind"], batch["reg_mask"], batch["reg"])}
    return sum(LOSS_WEIGHTS[k] * v for k, v in parts.items()), parts


# ------------------------------------------------------------------------------ the data
def default_packed(cache: Path, workers: int) -> Path:
    """coco128-seg beside the checkout (``../shared/data``; a worktree one level deeper finds it
    two levels up) packed into ``cache``, else 128 synthetic scenes; packed once, reused."""
    from fastload.bench.data import is_packed, pack_source, synthetic_pack
    for base in (ROOT.parent, ROOT.parent.parent):
        src = base / "shared" / "data" / "coco128-seg"
        if src.is_dir():
            packed = cache / "coco128-seg.packed"
            if not is_packed(packed):
                print(f"packing {src} into {packed} (once)", flush=True)
                pack_source(src, packed, "yolo", workers)
            return packed
    print(f"no coco128-seg beside {ROOT}: using 128 synthetic scenes (fastload.synth)",
          flush=True)
    return synthetic_pack(cache, 128, 0, workers)


def resolve_data(data, cache, workers: int) -> Path:
    """``--data`` (must be packed), or :func:`default_packed` in ``cache`` (default
    ``$FASTLOAD_CACHE`` or ``~/.cache/fastload``, then ``train/``)."""
    if data is None:
        base = Path(os.environ.get("FASTLOAD_CACHE") or Path.home() / ".cache" / "fastload")
        return default_packed(Path(cache) if cache else base / "train", workers)
    packed = Path(data)
    if not (packed / "manifest.json").is_file():
        raise ValueError(f"--data {packed}: not a packed dataset (no manifest.json); pack it "
                         f"with `fastload pack SRC {packed} --format FMT`")
    return packed


def make_loader(kind: str, packed, cfg, batch_size: int, workers: int, seed: int,
                device: torch.device):
    """``--loader fastload`` or ``torch`` (module docstring): shuffled, drop_last, seeded."""
    if kind == "fastload":
        from fastload import DataLoader
        return DataLoader(str(packed), batch_size=batch_size, shuffle=True, drop_last=True,
                          seed=seed, augment=cfg, targets=["centernet"], device=device,
                          num_threads=workers)
    from fastload.bench.albumentations_baseline import albumentations_loader
    return albumentations_loader(str(packed), cfg, batch_size=batch_size, num_workers=workers,
                                 seed=seed, epochs=1, pin_memory=device.type == "cuda",
                                 persistent_workers=True)


def endless(loader):
    """``(epoch, batch)`` forever: ``set_epoch(e)`` (the loader's, or its sampler's), then the
    epoch's batches."""
    set_epoch = getattr(loader, "set_epoch", None) or loader.sampler.set_epoch
    epoch = 0
    while True:
        set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1


def check_batch(batch: dict, batch_size: int, num_classes: int, size: int) -> None:
    """The keys, shapes and dtypes the loss reads (the same for both loaders), or ValueError."""
    h = size // STRIDE
    want = {"image": ((batch_size, 3, size, size), torch.float32),
            "hm": ((batch_size, num_classes, h, h), torch.float32),
            "wh": ((batch_size, None, 2), torch.float32),
            "reg": ((batch_size, None, 2), torch.float32),
            "ind": ((batch_size, None), torch.int64),
            "reg_mask": ((batch_size, None), torch.uint8)}
    for key, (shape, dtype) in want.items():
        if key not in batch:
            raise ValueError(f"the batch has no {key!r} (keys: {sorted(batch)})")
        got = batch[key]
        ok = got.dim() == len(shape) and all(s is None or s == g for s, g in zip(shape, got.shape))
        if not ok or got.dtype != dtype:
            raise ValueError(f"batch[{key!r}]: {tuple(got.shape)} {got.dtype}, want "
                             f"{tuple('K' if s is None else s for s in shape)} {dtype}")
    if batch["wh"].shape[1] != batch["ind"].shape[1]:
        raise ValueError("wh and ind have different numbers of object slots")


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: batch[k].to(device, non_blocking=True) for k in ("image",) + TARGET_KEYS}


# ------------------------------------------------------------------------------ the loop
class UtilizationSampler:
    """NVML's GPU utilization (``torch.cuda.utilization``: percent of the last sample period
    with a kernel running) sampled every ``period`` seconds on a thread, from :meth:`start`
    to :meth:`stop`, so that long and short steps weigh by their duration. ``mean()`` is None
    when NVML is not available (pynvml not installed)."""

    def __init__(self, device: torch.device, period: float = 0.2):
        import threading
        self.device, self.period = device, period
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        try:
            torch.cuda.utilization(device)
            self.available = True
        except Exception:
            self.available = False

    def _run(self):
        while not self._stop.wait(self.period):
            self.samples.append(float(torch.cuda.utilization(self.device)))

    def start(self):
        if self.available:
            self._thread.start()

    def stop(self):
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def mean(self):
        return sum(self.samples) / len(self.samples) if self.samples else None


def train_step(model, opt, batch: dict, cuda: bool):
    """Forward, loss, backward, optimizer step; ``([total, hm, wh, reg], gpu_s)``. Reading the
    losses back (one ``.tolist()``) waits for the step, like a loop that logs its loss. On
    CUDA, ``gpu_s`` is the GPU time between events recorded before the forward and after the
    optimizer step; None on CPU."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    total, parts = centernet_loss(model(batch["image"]), batch)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if cuda:
        end.record()
    values = torch.stack([total.detach()] + [p.detach() for p in parts.values()]).tolist()
    if not cuda:
        return values, None
    end.synchronize()
    return values, start.elapsed_time(end) / 1000.0


def train(args):
    """Run the loop; ``(summary, rows)``: the JSON line's dict and one dict per step."""
    from fastload import AugmentConfig
    from fastload.store import Dataset
    device = torch.device(args.device)
    packed = resolve_data(args.data, args.cache, args.workers)
    num_classes = len(Dataset(packed).classes)
    cfg = AugmentConfig(out_size=(args.size, args.size))
    torch.manual_seed(args.seed)
    model = CenterNet(num_classes, args.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = make_loader(args.loader, packed, cfg, args.batch_size, args.workers, args.seed,
                         device)
    if len(loader) == 0:
        raise ValueError(f"{packed}: {len(Dataset(packed))} records, fewer than one batch of "
                         f"{args.batch_size}")
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # one input size: pick the fastest kernels
    nvml = UtilizationSampler(device) if cuda else None
    rows = []
    batches = endless(loader)
    print(f"{args.loader} loader, {len(loader)} batches/epoch of {args.batch_size}, "
          f"{args.size}x{args.size}, {args.workers} workers, {args.device}, data {packed}",
          flush=True)
    t_start = time.perf_counter()
    for step in range(args.steps):
        if nvml is not None and step == min(args.warmup, args.steps - 1):
            nvml.start()
        t0 = time.perf_counter()
        epoch, batch = next(batches)
        if step == 0:
            check_batch(batch, args.batch_size, num_classes, args.size)
        batch = to_device(batch, device)
        t1 = time.perf_counter()
        values, gpu_s = train_step(model, opt, batch, cuda)
        t2 = time.perf_counter()
        rows.append(dict(zip(CSV_FIELDS, [step, epoch, *values, t2 - t0, t1 - t0, gpu_s])))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            r = rows[-1]
            gpu = f", gpu {gpu_s:.3f} s" if cuda else ""
            print(f"step {step + 1}/{args.steps} epoch {epoch} loss {r['loss']:.4f} "
                  f"(hm {r['hm']:.4f} wh {r['wh']:.4f} reg {r['reg']:.4f}) step {r['step_s']:.3f} s"
                  f", data wait {r['wait_s']:.3f} s ({r['wait_s'] / r['step_s']:.0%}){gpu}",
                  flush=True)
    seconds = time.perf_counter() - t_start
    if nvml is not None:
        nvml.stop()
    return summarize(args, rows, nvml.mean() if nvml else None, seconds, packed), rows


def summarize(args, rows: list, utilization, seconds: float, packed) -> dict:
    """The JSON line (module docstring): measured steps are those after ``--warmup`` (all of
    them when there are no more); ``utilization``: NVML's mean percent over them, or None."""
    window = max(1, min(20, len(rows) // 5))
    measured = rows[args.warmup:] or rows
    step_s = sum(r["step_s"] for r in measured)
    wait_s = sum(r["wait_s"] for r in measured)
    gpu_idle, source = None, None
    if args.device == "cuda":
        if utilization is not None:
            gpu_idle, source = 1.0 - utilization / 100.0, "nvml"
        else:
            gpu_idle = 1.0 - sum(r["gpu_s"] for r in measured) / step_s
            source = "events"

    def mean_loss(rs):
        return sum(r["loss"] for r in rs) / len(rs)

    return {"loader": args.loader, "device": args.device, "steps": len(rows),
            "batch_size": args.batch_size, "first_loss": round(mean_loss(rows[:window]), 5),
            "last_loss": round(mean_loss(rows[-window:]), 5),
            "images_per_s": round(args.batch_size * len(measured) / step_s, 2),
            "data_wait": round(wait_s / step_s, 4),
            "step_s_median": round(statistics.median(r["step_s"] for r in measured), 4),
            "gpu_idle": None if gpu_idle is None else round(gpu_idle, 4),
            "seconds": round(seconds, 2), "size": args.size, "workers": args.workers,
            "warmup": args.warmup, "loss_window": window, "gpu_idle_source": source,
            "data": str(packed)}


def write_out(directory, rows: list, summary: dict) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "steps.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    (d / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


# ------------------------------------------------------------------------------ the command
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="train_centernet.py",
        description="Train a small CenterNet on a packed dataset with fastload's loader or "
                    "torch's (albumentations); log loss, step time and data wait; print a JSON "
                    "summary as the last line.")
    p.add_argument("--loader", choices=("fastload", "torch"), default="fastload",
                   help="fastload.DataLoader, or torch's DataLoader with albumentations and "
                   "NumPy targets (default: fastload)")
    cuda = torch.cuda.is_available()
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if cuda else "cpu",
                   help="default: cuda when torch sees a GPU, else cpu (here: %(default)s)")
    p.add_argument("--data", default=None, help="packed dataset (fastload pack); default: "
                   "../shared/data/coco128-seg beside the checkout, else 128 synthetic scenes, "
                   "packed once into --cache")
    p.add_argument("--cache", default=None, help="where the default data is packed "
                   "(default: $FASTLOAD_CACHE or ~/.cache/fastload, then train/)")
    p.add_argument("--steps", type=int, default=500, help="training steps (default: 500)")
    p.add_argument("--batch-size", type=int, default=16, help="default: 16")
    p.add_argument("--size", type=int, default=512, help="output height = width, a multiple "
                   "of 32 (default: 512)")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)),
                   help="fastload threads / torch DataLoader worker processes (default: the "
                   "CPU count, at most 8; here %(default)s)")
    p.add_argument("--width", type=int, default=32,
                   help="channels of the model at stride 4 (default: 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0,
                   help="model init, sample order and augmentation (default: 0)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of "
                   "images_per_s, data_wait, step_s_median and gpu_idle (default: 5)")
    p.add_argument("--log-every", type=int, default=10,
                   help="print a line every N steps (default: 10)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/steps.csv (one row per step) and DIR/summary.json")
    a = p.parse_args(argv)
    for name in ("steps", "batch_size", "workers", "width", "log_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.size < 32 or a.size % 32:
        p.error("--size must be a positive multiple of 32 (the model's stride 32)")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_centernet.py: error: --device cuda, but torch sees no CUDA device "
              "(torch.cuda.is_available() is False); use --device cpu", file=sys.stderr)
        return 2
    try:
        summary, rows = train(args)
    except ValueError as e:  # fastload's errors name the file or sample
        print(f"train_centernet.py: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        write_out(args.out, rows, summary)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

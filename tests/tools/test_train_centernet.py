"""``tools/train_centernet.py`` and ``tools/plot_train_curves.py``: the real script, run as a
subprocess on a tiny synthetic pack, learns with either loader and prints a well-formed JSON
line; both loaders give the loss the same batch layout and the same image normalization; the
losses are CenterNet's."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastload.augment.config import AugmentConfig
from tools import plot_train_curves, train_centernet as tc

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "train_centernet.py"
KEYS = {"loader", "device", "steps", "batch_size", "first_loss", "last_loss", "images_per_s",
        "data_wait", "gpu_idle", "seconds"}
STEPS = 40


def run_script(*args, check=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """16 synthetic 160x120 scenes (5 classes), packed."""
    from fastload.packing import pack
    from fastload.synth import write_dataset
    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "src", "coco", n_images=16, seed=0, width=160, height=120)
    pack(root / "src", root / "packed", "coco", progress=False)
    return root / "packed"


@pytest.fixture(scope="module")
def runs(packed):
    """Both loaders, the same settings, ``--out`` folders: ``{loader: (json line, out dir)}``."""
    out = {}
    for loader in ("fastload", "torch"):
        d = packed.parent / f"run-{loader}"
        proc = run_script("--loader", loader, "--device", "cpu", "--data", packed, "--size", 64,
                          "--batch-size", 8, "--workers", 2, "--steps", STEPS, "--lr", 2e-3,
                          "--log-every", 10, "--seed", 0, "--out", d)
        lines = proc.stdout.strip().splitlines()
        assert sum(line.startswith("step ") for line in lines) == STEPS // 10
        out[loader] = (json.loads(lines[-1]), d)
    return out


@pytest.mark.parametrize("loader", ["fastload", "torch"])
def test_loss_falls_and_the_json_line_is_well_formed(runs, loader):
    s, _ = runs[loader]
    assert KEYS <= set(s)
    assert s["loader"] == loader and s["device"] == "cpu" and s["steps"] == STEPS
    assert s["batch_size"] == 8 and s["gpu_idle"] is None
    assert 0.0 <= s["data_wait"] <= 1.0 and s["images_per_s"] > 0 and s["seconds"] > 0
    assert 0 < s["step_s_median"] < s["seconds"]
    # measured over the first / last 8 steps: about 0.7x here (seeds 0-2, both loaders)
    assert s["loss_window"] == 8
    assert math.isfinite(s["first_loss"]) and s["last_loss"] < 0.85 * s["first_loss"], s


def test_out_folder(runs):
    s, d = runs["fastload"]
    assert json.loads((d / "summary.json").read_text()) == s
    with open(d / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(STEPS))
    assert set(rows[0]) == set(tc.CSV_FIELDS)
    assert all(r["gpu_s"] == "" for r in rows)  # CPU: no GPU time
    assert all(0 <= float(r["wait_s"]) <= float(r["step_s"]) for r in rows)
    first = sum(float(r["loss"]) for r in rows[:8]) / 8
    assert first == pytest.approx(s["first_loss"], abs=1e-4)
    parts = rows[-1]
    total = float(parts["hm"]) + 0.1 * float(parts["wh"]) + float(parts["reg"])
    assert float(parts["loss"]) == pytest.approx(total, rel=1e-5)


def test_plot_compares_the_two_runs(runs, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    assert plot_train_curves.main([str(runs["fastload"][1]), str(runs["torch"][1]),
                                   "--window", "20", "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    lines = plot_train_curves.compare([plot_train_curves.read_run(runs[k][1])
                                       for k in ("fastload", "torch")], 20)
    assert lines[0].startswith("fastload: mean loss over the last 20 steps")
    assert lines[2].startswith("fastload - torch:") and "Welch" in lines[2] and "KS" in lines[2]


def test_both_loaders_give_the_same_layout_and_normalization(packed):
    """Augmentation off: the fastload batch and the albumentations items of the same records
    pass the same layout check, their images differ by resampling only (a different
    normalization, e.g. 0..1 or no std, would differ by ~1), and they have the same objects."""
    from fastload.bench.albumentations_baseline import AlbumentationsDataset
    cfg = AugmentConfig.off(out_size=(64, 64))
    fl = tc.make_loader("fastload", packed, cfg, 4, 1, 0, torch.device("cpu"))
    batch = next(iter(fl))
    tc.check_batch(batch, 4, 5, 64)
    tl = tc.make_loader("torch", packed, cfg, 4, 0, 0, torch.device("cpu"))
    tc.check_batch(next(iter(tl)), 4, 5, 64)
    ds = AlbumentationsDataset(packed, cfg)
    for j, i in enumerate(batch["index"].tolist()):
        item = ds[i]
        assert (item["image"] - batch["image"][j]).abs().mean() < 0.05
        assert item["image"].mean() == pytest.approx(float(batch["image"][j].mean()), abs=0.01)
        assert int(item["reg_mask"].sum()) == int(batch["reg_mask"][j].sum()) > 0
    with pytest.raises(ValueError, match="'hm'"):
        tc.check_batch({k: v for k, v in batch.items() if k != "hm"}, 4, 5, 64)
    with pytest.raises(ValueError, match="reg_mask"):
        tc.check_batch(dict(batch, reg_mask=batch["reg_mask"].bool()), 4, 5, 64)


def test_focal_loss_is_centernets():
    """One positive at (0, 0) in a 1x2x2 heatmap, the rest 0.5 (weight (1 - 0.5)^4): the sum of
    CenterNet's terms by hand, over one positive."""
    p = torch.tensor(0.3)
    logits = torch.logit(p).expand(1, 1, 2, 2).clone()
    gt = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    pos = math.log(0.3) * 0.7 ** 2
    neg = math.log(0.7) * 0.3 ** 2 * (0.5 ** 4 + 1 + 1)
    assert float(tc.focal_loss(logits, gt)) == pytest.approx(-(pos + neg), rel=1e-5)
    # no positive: the negative term alone
    assert float(tc.focal_loss(logits, torch.zeros(1, 1, 2, 2))) == \
        pytest.approx(-4 * math.log(0.7) * 0.09, rel=1e-5)


def test_reg_l1_loss_reads_the_objects_cells():
    pred = torch.arange(8.0).reshape(1, 2, 2, 2)  # channel c, cell k: 4c + k
    ind = torch.tensor([[3, 1, 0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.uint8)
    target = torch.tensor([[[3.0, 9.0], [0.0, 0.0], [100.0, 100.0]]])
    # object 0 at cell 3: (3, 7) vs (3, 9) -> 2; object 1 at cell 1: (1, 5) vs 0 -> 6; 4 terms
    assert float(tc.reg_l1_loss(pred, ind, mask, target)) == pytest.approx(8 / (4 + 1e-4))


def test_model_heads_at_stride_4():
    out = tc.CenterNet(5, width=8)(torch.zeros(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "hm": (2, 5, 16, 24), "wh": (2, 2, 16, 24), "reg": (2, 2, 16, 24)}
    assert torch.sigmoid(out["hm"]).mean().item() == pytest.approx(0.1, abs=0.01)


def test_command_line_errors(packed, tmp_path):
    proc = run_script("--help")
    for option in ("--loader", "--device", "--steps", "--batch-size", "--workers", "--size",
                   "--lr", "--log-every", "--seed", "--data", "--out", "--warmup", "--cache"):
        assert option in proc.stdout
    proc = run_script("--data", tmp_path, "--device", "cpu", check=False)
    assert proc.returncode == 2 and "not a packed dataset" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        proc = run_script("--device", "cuda", "--data", packed, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            "train_centernet.py: error: --device cuda, but torch sees no CUDA device "
            "(torch.cuda.is_available() is False); use --device cpu"]

"""Plot the loss curves of ``tools/train_centernet.py --out DIR`` runs and say whether they are
alike.

    python3 tools/plot_train_curves.py runs/fastload runs/torch --out curves.png [--window 100]

Each DIR holds ``steps.csv`` and ``summary.json`` (its ``loader`` names the curve). The chart:
top, the total loss per step (faint) and its running mean over ``--smooth`` steps; bottom, the
data wait per step as a fraction of the step (running mean).

The statistic, printed (and written to the chart's title): for each run, the mean total loss
over the last ``--window`` steps with its standard error (std / sqrt(n)), then for each pair of
runs Welch's t-test and the two-sample Kolmogorov-Smirnov test on those per-step losses (scipy).
Consecutive steps of one run are not independent samples (the model moves slowly), so the
p-values are a rough guide; the difference of means in standard errors is the number to read.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path


def read_run(directory) -> dict:
    """``{"label", "summary", "step", "loss", "wait_frac"}`` of one ``--out`` folder."""
    d = Path(directory)
    summary = json.loads((d / "summary.json").read_text())
    with open(d / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{d / 'steps.csv'}: no steps")
    return {"label": summary.get("loader", d.name), "summary": summary,
            "step": [int(r["step"]) for r in rows], "loss": [float(r["loss"]) for r in rows],
            "wait_frac": [float(r["wait_s"]) / float(r["step_s"]) for r in rows]}


def running_mean(values, n: int):
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= n:
            acc -= values[i - n]
        out.append(acc / min(i + 1, n))
    return out


def mean_sem(values):
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd / math.sqrt(n)


def compare(runs: list, window: int) -> list:
    """Lines: each run's mean +- sem over its last ``window`` steps, then each pair's
    difference (in combined standard errors), Welch's t-test and the KS test."""
    from scipy import stats
    lines = []
    for r in runs:
        m, se = mean_sem(r["loss"][-window:])
        lines.append(f"{r['label']}: mean loss over the last {min(window, len(r['loss']))} "
                     f"steps {m:.4f} +- {se:.4f} (sem)")
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            la, lb = a["loss"][-window:], b["loss"][-window:]
            (ma, sa), (mb, sb) = mean_sem(la), mean_sem(lb)
            z = (ma - mb) / math.sqrt(sa ** 2 + sb ** 2) if sa or sb else 0.0
            welch = stats.ttest_ind(la, lb, equal_var=False)
            ks = stats.ks_2samp(la, lb)
            lines.append(f"{a['label']} - {b['label']}: {ma - mb:+.4f} ({z:+.2f} sem); "
                         f"Welch t = {welch.statistic:.2f}, p = {welch.pvalue:.2f}; "
                         f"KS D = {ks.statistic:.3f}, p = {ks.pvalue:.2f}")
    return lines


def plot(runs: list, out, smooth: int, window: int, title: str) -> None:
    from fastload.optional import require
    mpl = require("matplotlib", extra="bench", what="plot_train_curves.py")
    mpl.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, aw) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    for k, r in enumerate(runs):
        color = f"C{k}"
        ax.plot(r["step"], r["loss"], color=color, alpha=0.2, lw=0.8)
        ax.plot(r["step"], running_mean(r["loss"], smooth), color=color, lw=1.8,
                label=f"{r['label']} (running mean of {smooth})")
        aw.plot(r["step"], running_mean(r["wait_frac"], smooth), color=color, lw=1.5,
                label=r["label"])
    last = max(len(r["step"]) for r in runs)
    ax.axvspan(last - window, last, color="0.9", zorder=0,
               label=f"last {window} steps (statistic)")
    ax.set_yscale("log")
    ax.set_ylabel("total loss (hm + 0.1 wh + reg)")
    ax.legend()
    ax.set_title(title, fontsize=9)
    aw.set_ylabel("data wait / step")
    aw.set_xlabel("step")
    aw.set_ylim(0, 1)
    aw.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Plot train_centernet.py --out runs and compare "
                                            "their final losses.")
    p.add_argument("runs", nargs="+", help="--out folders of train_centernet.py")
    p.add_argument("--out", default=None, help="chart (PNG); without it, only the statistic")
    p.add_argument("--window", type=int, default=100, help="last steps the statistic uses")
    p.add_argument("--smooth", type=int, default=20, help="running mean of the curves")
    a = p.parse_args(argv)
    try:
        runs = [read_run(d) for d in a.runs]
    except (OSError, ValueError, KeyError) as e:
        print(f"plot_train_curves.py: error: {e}", file=sys.stderr)
        return 2
    lines = compare(runs, a.window)
    print("\n".join(lines))
    if a.out:
        s = runs[0]["summary"]
        head = (f"CenterNet, {Path(s.get('data', '')).name}, {s.get('size')}px, batch "
                f"{s.get('batch_size')}, {s.get('device')}")
        plot(runs, a.out, a.smooth, a.window, "\n".join([head] + lines))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Render `fastload bench` results: the Markdown table (stdout and ``report.md``), the raw
numbers (``results.json``) and a bar chart (``throughput.png``, matplotlib Agg; matplotlib
comes with the ``bench`` extra: without it the report says so and the rest is written)."""
from __future__ import annotations

import json
from pathlib import Path

from fastload.optional import MissingDependency, require

CHART = "throughput.png"


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def ratios(rows):
    """images/s median of each ok row divided by torch-seed's (None when either is missing)."""
    ref = next((r for r in rows if r["row"] == "torch-seed" and r.get("status") == "ok"), None)
    refv = ref["images_per_s"]["median"] if ref else None
    out = {}
    for r in rows:
        if r.get("status") == "ok" and refv:
            out[r["row"]] = r["images_per_s"]["median"] / refv
        else:
            out[r["row"]] = None
    return out


def table(results) -> str:
    rows = results["rows"]
    rat = ratios(rows)
    head = ("| row | what | images/s median (min-max) | x torch-seed | CPU util | "
            "peak RSS MB | GPU mem MB | data wait |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['row']} | {r.get('label', '')} | {r.get('reason', r.get('status'))} "
                         "| - | - | - | - | - |")
            continue
        ips = r["images_per_s"]
        gpu = r.get("gpu_mem_mb")
        dw = r.get("data_wait")
        lines.append(
            f"| {r['row']} | {r.get('label', '')} | {ips['median']:.1f} ({ips['min']:.1f}-{ips['max']:.1f}) "
            f"| {_fmt(rat[r['row']], '.2f')} | {r['cpu_util'] * 100:.0f}% "
            f"| {r['peak_rss_mb']:.0f} | {_fmt(gpu, '.0f')} "
            f"| {'-' if dw is None else format(dw * 100, '.0f') + '%'} |")
    return "\n".join(lines)


GOALS = [  # (row, reference row, minimum ratio row/reference, text): what fastload aims at
    ("fastload-cpu", "torch-seed", 2.0, "fastload-cpu >= 2x torch-seed"),
    ("fastload-cpu", "torch-numpy", 1.5, "fastload-cpu >= 1.5x torch-numpy"),
    ("fastload-gpu", "torch-seed", 10.0, "fastload-gpu >= 10x torch-seed"),
    ("fastload-gpu", "bound-nvjpeg", 1 / 1.5, "fastload-gpu within 1.5x of nvJPEG decode alone"),
]


def goals(rows) -> list:
    """[(text, ratio or None, met or None)] for each of :data:`GOALS`, from this run's medians."""
    med = {r["row"]: r["images_per_s"]["median"] for r in rows if r.get("status") == "ok"}
    out = []
    for row, ref, need, text in GOALS:
        if row in med and ref in med and med[ref] > 0:
            q = med[row] / med[ref]
            out.append((text, q, q >= need))
        else:
            out.append((text, None, None))
    return out


def markdown(results) -> str:
    m = results["meta"]
    out = [
        "# fastload bench",
        "",
        f"`{m['command']}`",
        "",
        f"- date: {m['date']}; host: {m['cpu']} ({m['cores']} cores usable); GPU: {m['gpu'] or 'none'}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}",
        f"- dataset: {m['dataset']} ({m['num_images']} images); packed: {m['packed'] or '-'}",
        f"- batch {m['batch_size']}, output {m['size']}x{m['size']}, {m['workers']} workers/threads per row, "
        f"{m['seconds']} s measured per row in {m['windows']} windows after warm-up",
        f"- simulated training step: {_fmt(m.get('step_ms'), '.1f')} ms per batch "
        f"({m.get('step_source', '')}); data wait = time blocked on the loader / loop time",
        "",
        table(results),
        "",
        "CPU util: process-tree CPU time / wall / cores. Peak RSS: summed over the process "
        "tree (shared pages counted per process; PSS in results.json).",
        "",
        "Goals (ratios of medians in this run):",
    ]
    for text, q, met in goals(results["rows"]):
        out.append(f"- {text}: " + ("not measured here" if q is None else
                                   f"{q:.2f}x, {'met' if met else 'NOT met'}"))
    return "\n".join(out) + "\n"


def chart(results, path) -> None:
    """Draw the bar chart into ``path`` (PNG). Raises ``MissingDependency`` without matplotlib."""
    matplotlib = require("matplotlib", extra="bench", what="the bench chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = results["rows"]
    rat = ratios(rows)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    names = [r["row"] for r in rows][::-1]
    for y, r in enumerate(rows[::-1]):
        if r.get("status") == "ok":
            ips = r["images_per_s"]
            color = ("#7f7f7f" if r["row"].startswith("bound") else
                     "#d62728" if r["row"].startswith("torch") else "#1f77b4")
            ax.barh(y, ips["median"], color=color,
                    xerr=[[ips["median"] - ips["min"]], [ips["max"] - ips["median"]]], capsize=3)
            txt = f" {ips['median']:.0f}/s" + (f"  x{rat[r['row']]:.1f}" if rat[r["row"]] else "")
            ax.text(ips["max"], y, txt, va="center", fontsize=8)
        else:
            ax.text(0, y, "  " + str(r.get("reason", r.get("status")))[:70], va="center",
                    fontsize=8, color="#555555")
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("images/s (median of windows, bars = min-max; log scale)")
    m = results["meta"]
    ax.set_title(f"fastload bench: batch {m['batch_size']}, {m['size']}x{m['size']}, "
                 f"{m['workers']} workers, {m['cores']} cores, GPU: {m['gpu'] or 'none'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results, out_dir) -> tuple:
    """Write report.md, results.json and the chart into ``out_dir``.

    Returns ``(markdown, written)``: the report's text and the paths written. Without
    matplotlib there is no chart; ``report.md`` and ``results.json`` say why (``chart``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = dict(results)
    results["ratios_to_torch_seed"] = ratios(results["rows"])
    results["goals"] = [{"goal": t, "ratio": q, "met": m} for t, q, m in goals(results["rows"])]
    png = out / CHART
    png.unlink(missing_ok=True)  # never leave an older run's chart beside this report
    try:
        chart(results, png)
        results["chart"] = CHART
    except MissingDependency as e:
        results["chart"] = f"not drawn: {e}"
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = markdown(results)
    if results["chart"] != CHART:
        md += f"\nChart {results['chart']}\n"
    (out / "report.md").write_text(md)
    written = [out / "report.md", out / "results.json"] + ([png] if png.exists() else [])
    return md, written

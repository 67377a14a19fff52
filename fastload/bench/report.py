"""Render `fastload bench` results: the Markdown table (stdout and ``report.md``), the raw
numbers (``results.json``) and a bar chart (``throughput.png``); in the megapixel mode a table
(``megapixels.md``) and a line chart (``megapixels.png``). Charts use matplotlib (Agg), which
comes with the ``bench`` extra: without it the report says so and the rest is written."""
from __future__ import annotations

import json
from pathlib import Path

from fastload.optional import MissingDependency, require

CHART = "throughput.png"
MEGAPIXEL_CHART = "megapixels.png"
REFERENCES = ("torch-seed", "albumentations")  # the ratio columns


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _reason(r) -> str:
    """A row's reason for having no number, fit for one table cell."""
    return " ".join(str(r.get("reason", r.get("status"))).split()).replace("|", "/")


def _median(r):
    return r["images_per_s"]["median"] if r.get("status") == "ok" else None


def ratios(rows, reference="torch-seed"):
    """images/s median of each ok row divided by ``reference``'s (None when either is missing)."""
    ref = next((r for r in rows if r["row"] == reference and r.get("status") == "ok"), None)
    refv = _median(ref) if ref else None
    return {r["row"]: (_median(r) / refv if refv and _median(r) is not None else None)
            for r in rows}


def table(results) -> str:
    rows = results["rows"]
    rat = {ref: ratios(rows, ref) for ref in REFERENCES}
    head = ("| row | what | images/s median (min-max) | x torch-seed | x albumentations | "
            "CPU util | peak RSS MB | GPU mem MB | data wait |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['row']} | {r.get('label', '')} | {_reason(r)} "
                         "| - | - | - | - | - | - |")
            continue
        ips = r["images_per_s"]
        dw = r.get("data_wait")
        lines.append(
            f"| {r['row']} | {r.get('label', '')} | {ips['median']:.1f} ({ips['min']:.1f}-{ips['max']:.1f}) "
            f"| {_fmt(rat['torch-seed'][r['row']], '.2f')} "
            f"| {_fmt(rat['albumentations'][r['row']], '.2f')} | {r['cpu_util'] * 100:.0f}% "
            f"| {r['peak_rss_mb']:.0f} | {_fmt(r.get('gpu_mem_mb'), '.0f')} "
            f"| {'-' if dw is None else format(dw * 100, '.0f') + '%'} |")
    return "\n".join(lines)


GOALS = [  # (row, reference row, minimum ratio row/reference, text): what fastload aims at
    ("fastload-cpu", "torch-seed", 2.0, "fastload-cpu >= 2x torch-seed"),
    ("fastload-cpu", "torch-numpy", 1.5, "fastload-cpu >= 1.5x torch-numpy"),
    ("fastload-cpu", "albumentations", 2.5,
     "fastload-cpu >= 2.5x albumentations (640x480 JPEGs; >= 3x on 1-2 MP photos)"),
    ("fastload-gpu", "torch-seed", 10.0, "fastload-gpu >= 10x torch-seed"),
    ("fastload-gpu", "bound-nvjpeg", 1 / 1.5, "fastload-gpu within 1.5x of nvJPEG decode alone"),
]


def goals(rows) -> list:
    """[(text, ratio or None, met or None)] for each of :data:`GOALS`, from this run's medians."""
    med = {r["row"]: _median(r) for r in rows if r.get("status") == "ok"}
    out = []
    for row, ref, need, text in GOALS:
        if row in med and ref in med and med[ref] > 0:
            q = med[row] / med[ref]
            out.append((text, q, q >= need))
        else:
            out.append((text, None, None))
    return out


def paired_ratio(row, ref):
    """Median over the rounds of ``row``'s window rate / ``ref``'s in the same round (both ok
    results): the windows of one round were measured minutes apart at most, so this ratio
    cancels what the machine did between rounds. None without windows to pair."""
    if not (row and ref and row.get("status") == ref.get("status") == "ok"):
        return None
    q = sorted(a / b for a, b in zip(row["images_per_s"]["windows"],
                                     ref["images_per_s"]["windows"]) if b > 0)
    return (q[(len(q) - 1) // 2] + q[len(q) // 2]) / 2 if q else None


def _head(m, extra_lines=()) -> list:
    return [
        "# fastload bench" + (" --megapixels" if m.get("mode") == "megapixels" else ""),
        "",
        f"`{m['command']}`",
        "",
        f"- date: {m['date']}; host: {m['cpu']} ({m['cores']} cores usable); GPU: {m['gpu'] or 'none'}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}",
        *extra_lines,
        f"- batch {m['batch_size']}, output {m['size']}x{m['size']}, {m['workers']} workers/threads "
        f"per row, {m['seconds']} s measured per row after warm-up",
        f"- alternating windows: {m['schedule']}",
    ]


def stage_table(stages) -> str:
    """The per-stage times of :func:`fastload.bench.stages.profile` as Markdown."""
    out = [f"Where the time goes ({stages['method']}, {stages['n_images']} images), "
           "ms per image:", ""]
    for name in ("albumentations", "fastload-cpu"):
        s = stages.get(name) or {}
        if "error" in s:
            out += [f"- {name}: {s['error']}", ""]
            continue
        out += [f"| {name} stage | ms/image |", "|---|---|"]
        out += [f"| {k} | {v:.2f} |" for k, v in s["stages"]]
        out += [f"| **sum of stages** | **{s['sum_ms']:.2f}** |",
                f"| {s['whole']} | {s['whole_ms']:.2f} |"]
        out += [f"| {k} | {v:.2f} |" for k, v in s.get("checks", {}).items()]
        out.append("")
    return "\n".join(out)


def markdown(results) -> str:
    m = results["meta"]
    out = _head(m, [
        f"- dataset: {m['dataset']} ({m['num_images']} images, {m.get('source_format', '?')}, "
        f"median {m.get('median_size') or '?'}); packed: {m['packed']}",
        f"- simulated training step: {_fmt(m.get('step_ms'), '.1f')} ms per batch "
        f"({m.get('step_source', '')}); data wait = time blocked on the loader / loop time"])
    out += [
        "",
        table(results),
        "",
        "CPU util: process-tree CPU time / wall / cores. Peak RSS: summed over the process "
        "tree (shared pages counted per process; PSS in results.json).",
        "",
        "Goals (ratios of medians in this run):",
    ]
    by_row = {r["row"]: r for r in results["rows"]}
    for (row, ref, _, _), (text, q, met) in zip(GOALS, goals(results["rows"])):
        pq = paired_ratio(by_row.get(row), by_row.get(ref))
        out.append(f"- {text}: " + ("not measured here" if q is None else
                                   f"{q:.2f}x, {'met' if met else 'NOT met'}"
                                   + (f" (median of per-round ratios: {pq:.2f}x)" if pq else "")))
    if results.get("stages"):
        out += ["", stage_table(results["stages"])]
    return "\n".join(out) + "\n"


def chart(results, path) -> None:
    """Draw the bar chart into ``path`` (PNG). Raises ``MissingDependency`` without matplotlib."""
    matplotlib = require("matplotlib", extra="bench", what="the bench chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = results["rows"]
    rat = ratios(rows, "albumentations")
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    names = [r["row"] for r in rows][::-1]
    for y, r in enumerate(rows[::-1]):
        if r.get("status") == "ok":
            ips = r["images_per_s"]
            color = ("#7f7f7f" if r["row"].startswith("bound") else
                     "#ff7f0e" if r["row"] == "albumentations" else
                     "#d62728" if r["row"].startswith("torch") else "#1f77b4")
            ax.barh(y, ips["median"], color=color,
                    xerr=[[ips["median"] - ips["min"]], [ips["max"] - ips["median"]]], capsize=3)
            txt = f" {ips['median']:.0f}/s" + (f"  x{rat[r['row']]:.1f} albu." if rat[r["row"]] else "")
            ax.text(ips["max"], y, txt, va="center", fontsize=8)
        else:
            ax.text(0, y, "  " + _reason(r)[:70], va="center",
                    fontsize=8, color="#555555")
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("images/s (median of alternating windows, bars = min-max; log scale)")
    m = results["meta"]
    ax.set_title(f"fastload bench: {m.get('median_size') or ''} sources, batch {m['batch_size']}, "
                 f"{m['size']}x{m['size']}, {m['workers']} workers, {m['cores']} cores, "
                 f"GPU: {m['gpu'] or 'none'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(results, out_dir, md_name, chart_name, draw, render) -> tuple:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / chart_name
    png.unlink(missing_ok=True)  # never leave an older run's chart beside this report
    try:
        draw(results, png)
        results["chart"] = chart_name
    except MissingDependency as e:
        results["chart"] = f"not drawn: {e}"
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = render(results)
    if results["chart"] != chart_name:
        md += f"\nChart {results['chart']}\n"
    (out / md_name).write_text(md)
    written = [out / md_name, out / "results.json"] + ([png] if png.exists() else [])
    return md, written


def write_all(results, out_dir) -> tuple:
    """Write report.md, results.json and the chart into ``out_dir``.

    Returns ``(markdown, written)``: the report's text and the paths written. Without
    matplotlib there is no chart; ``report.md`` and ``results.json`` say why (``chart``).
    """
    results = dict(results)
    for ref in REFERENCES:
        results[f"ratios_to_{ref.replace('-', '_')}"] = ratios(results["rows"], ref)
    by_row = {r["row"]: r for r in results["rows"]}
    results["goals"] = [{"goal": t, "ratio": q, "met": m,
                         "paired_ratio": paired_ratio(by_row.get(row), by_row.get(ref))}
                        for (row, ref, _, _), (t, q, m) in zip(GOALS, goals(results["rows"]))]
    return _write(results, out_dir, "report.md", CHART, chart, markdown)


# ------------------------------------------------------------------ megapixel mode
def megapixel_series(results) -> dict:
    """``{row: [(megapixels, median, min, max, size) ...]}`` of the ok (row, size) results."""
    out = {}
    for r in results["rows"]:
        if r.get("status") == "ok":
            ips = r["images_per_s"]
            out.setdefault(r["row"], []).append(
                (r["megapixels"], ips["median"], ips["min"], ips["max"], r["source_size"]))
    return {k: sorted(v) for k, v in out.items()}


def megapixel_markdown(results) -> str:
    m = results["meta"]
    sizes = m["sizes"]
    out = _head(m, [f"- data: {m['num_images']} photo-like JPEGs (quality 90) per size: " + ", ".join(
        f"{p['size']} ({p['megapixels']:.1f} MP, {p['mean_jpeg_mb']:.2f} MB)" for p in sizes)])
    rows = list(dict.fromkeys(r["row"] for r in results["rows"]))
    cell = {(r["row"], r["source_size"]): r for r in results["rows"]}
    out += ["", "images/s, median (min-max) of the windows:", "",
            "| row | " + " | ".join(p["size"] for p in sizes) + " |",
            "|---|" + "---|" * len(sizes)]
    for row in rows:
        vals = []
        for p in sizes:
            r = cell.get((row, p["size"]))
            if r is None or r.get("status") != "ok":
                vals.append(_reason(r) if r else "-")
            else:
                ips = r["images_per_s"]
                vals.append(f"{ips['median']:.1f} ({ips['min']:.1f}-{ips['max']:.1f})")
        out.append(f"| {row} | " + " | ".join(vals) + " |")
    if "fastload-cpu" in rows and "albumentations" in rows:
        q = []
        for p in sizes:
            a, f = cell.get(("albumentations", p["size"])), cell.get(("fastload-cpu", p["size"]))
            ok = a and f and a.get("status") == f.get("status") == "ok"
            q.append(f"{_median(f) / _median(a):.2f}x (per round {paired_ratio(f, a):.2f}x)"
                     if ok else "-")
        out.append("| fastload-cpu / albumentations (ratio of medians; median of per-round "
                   "ratios) | " + " | ".join(q) + " |")
    return "\n".join(out) + "\n"


def megapixel_chart(results, path) -> None:
    """images/s against source megapixels, one line per row (log-log). Raises
    ``MissingDependency`` without matplotlib."""
    matplotlib = require("matplotlib", extra="bench", what="the bench chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"torch-seed": "#d62728", "torch-numpy": "#9467bd", "albumentations": "#ff7f0e",
              "fastload-cpu": "#1f77b4", "fastload-gpu": "#2ca02c"}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for row, pts in megapixel_series(results).items():
        x = [p[0] for p in pts]
        med = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(x, med, yerr=err, marker="o", capsize=3, label=row, color=colors.get(row))
        for p in pts:
            ax.annotate(f"{p[1]:.3g}", (p[0], p[1]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=colors.get(row))
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = results["meta"]["sizes"]
    ax.set_xticks([p["megapixels"] for p in sizes])
    ax.set_xticklabels([f"{p['size']}\n{p['megapixels']:.1f} MP" for p in sizes], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("source image size (photo-like JPEG, quality 90)")
    ax.set_ylabel("images/s (median of alternating windows, bars = min-max)")
    m = results["meta"]
    ax.set_title(f"images/s vs source size: batch {m['batch_size']}, output {m['size']}x{m['size']}, "
                 f"{m['workers']} workers/threads, {m['cores']} cores", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_megapixels(results, out_dir) -> tuple:
    """Write megapixels.md, results.json and megapixels.png; ``(markdown, written)``."""
    return _write(dict(results), out_dir, "megapixels.md", MEGAPIXEL_CHART, megapixel_chart,
                  megapixel_markdown)

"""Time to the first batch from a fresh (or warm) kernel cache, with a per-kernel compile list.

    python3 tools/coldstart.py [--runs N] [--targets centernet] [--demo] [--keep-cache DIR]

Each run is a NEW process (``python3 tools/coldstart.py --child ...``) whose Numba cache
(``NUMBA_CACHE_DIR``) and fastload kernel folder (``FASTLOAD_CACHE``) point into an empty
temporary folder, so nothing compiled before is found: that is a fresh install. The child
times ``import fastload`` + ``DataLoader(pack, batch_size=8, device="cpu", targets=...)`` +
``next(iter(loader))``, then a second process with the SAME cache folder times it again
(the warm cache: what every later run of a user's script costs). With ``--demo`` the child
runs what ``fastload demo`` does after packing (two epochs of 64 images, batch 8, no
targets) and reports both epochs; with ``--torch-workers N``, the first batch of
``torch.utils.data.DataLoader(TorchDataset(pack), batch_size=8, num_workers=N)``. "CPU" is
the CPU time of the child and every process it waited for (a warm-up helper, torch workers).

Numba's event API (``numba:compile``, fired only on a cache miss) gives each dispatcher's
compile time, inclusive (a kernel's time includes the callees it compiles) and exclusive.
The pack (64 synthetic 640x480 COCO images) is made once, in the parent, with its own
throw-away cache.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(args) -> None:
    t0 = time.perf_counter()
    from numba.core import event as ev

    stack, compiles = [], []

    class _Listener(ev.Listener):
        def on_start(self, event):
            stack.append([time.perf_counter(), 0.0])

        def on_end(self, event):
            start, inner = stack.pop()
            dt = time.perf_counter() - start
            if stack:
                stack[-1][1] += dt
            d = event.data["dispatcher"]
            name = f"{d.py_func.__module__}.{d.py_func.__qualname__}"
            compiles.append({"name": name, "sig": str(event.data["args"]), "depth": len(stack),
                             "incl_s": dt, "excl_s": dt - inner})

    ev.register("numba:compile", _Listener())
    import fastload  # noqa: F401
    from fastload.loader import DataLoader
    t_import = time.perf_counter()
    marks = {"import_s": t_import - t0}
    if args.demo:
        loader = DataLoader(args.pack, batch_size=8, device="cpu")
        for epoch in range(2):  # (as fastload demo)
            loader.set_epoch(epoch)
            te = time.perf_counter()
            first = None
            for _ in loader:
                if first is None:
                    first = time.perf_counter() - te
            marks[f"epoch{epoch}_s"] = time.perf_counter() - te
            marks[f"epoch{epoch}_first_batch_s"] = first
        marks["first_batch_s"] = marks["import_s"] + marks["epoch0_first_batch_s"]
    elif args.torch_workers:
        import torch.utils.data
        from fastload.loader import TorchDataset, collate
        tds = TorchDataset(args.pack, targets=[t for t in args.targets.split(",") if t])
        dl = torch.utils.data.DataLoader(tds, batch_size=8, num_workers=args.torch_workers,
                                         collate_fn=collate)
        it = iter(dl)
        next(it)
        marks["first_batch_s"] = time.perf_counter() - t0
        del it
        loader = None
    else:
        targets = [t for t in args.targets.split(",") if t]
        loader = DataLoader(args.pack, batch_size=8, device="cpu", targets=targets)
        it = iter(loader)
        next(it)
        marks["first_batch_s"] = time.perf_counter() - t0
        it.close()
    if loader is not None:
        loader.close()
    marks["compiles"] = compiles
    marks["compile_s"] = sum(c["excl_s"] for c in compiles)
    print("RESULT " + json.dumps(marks))


def _short(sig: str) -> str:
    return sig.replace("Array(", "A(").replace(", aligned=True", "").replace(", False)", ")")


def _tree(compiles, max_depth, sigs=False):
    """Lines of the compile tree (events arrive in post-order, each with its depth)."""
    out, pending = [], []  # pending: (depth, lines) of finished subtrees
    for c in compiles:
        kids = []
        while pending and pending[-1][0] > c["depth"]:
            kids = pending.pop()[1] + kids
        line = (f"{'  ' * c['depth']}{c['incl_s']:6.2f} s ({c['excl_s']:.2f} own)  "
                f"{c['name']}" + (f" {_short(c['sig'])}" if sigs else ""))
        pending.append((c["depth"], ([line] if c["depth"] <= max_depth else []) + kids))
    for _, lines in pending:
        out += lines
    return out


def _make_pack(folder: Path) -> Path:
    packed = folder / "packed"
    if (packed / "manifest.json").exists():
        return packed
    code = ("from fastload.synth import write_dataset; from fastload.packing import pack; "
            f"write_dataset({str(folder / 'src')!r}, 'coco', n_images=64); "
            f"pack({str(folder / 'src')!r}, {str(packed)!r}, 'coco', overwrite=True, "
            "progress=False)")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(folder / "numba"), FASTLOAD_CACHE=str(folder / "fl"),
               PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return packed


def _run(pack: Path, cache: Path, args) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache / "numba"), FASTLOAD_CACHE=str(cache / "fl"),
               PYTHONPATH=str(ROOT))
    env.pop("NUMBA_DEBUG_CACHE", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--pack", str(pack),
           "--targets", args.targets, "--torch-workers", str(args.torch_workers)] \
        + (["--demo"] if args.demo else [])
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    if p.returncode:
        sys.exit(f"child failed:\n{p.stderr}")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line[7:])
    res["process_s"] = wall
    res["cpu_s"] = cpu  # the child and the processes it waited for (a warm-up helper)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pack", default=None, help="packed dataset (default: make one)")
    ap.add_argument("--targets", default="centernet", help="comma-separated target names")
    ap.add_argument("--demo", action="store_true", help="two epochs like `fastload demo`")
    ap.add_argument("--torch-workers", type=int, default=0,
                    help="first batch of torch's DataLoader over fastload.TorchDataset with "
                         "this many worker processes instead")
    ap.add_argument("--runs", type=int, default=1, help="fresh+warm pairs")
    ap.add_argument("--top", type=int, default=12, help="kernels listed per run")
    ap.add_argument("--tree", type=int, default=-1, help="print the compile tree to this depth")
    ap.add_argument("--sigs", action="store_true", help="show signatures in the tree")
    ap.add_argument("--json", default=None, help="write all results here")
    args = ap.parse_args()
    if args.child:
        return _child(args)
    work = Path(tempfile.mkdtemp(prefix="fastload-coldstart-"))
    pack = Path(args.pack) if args.pack else _make_pack(work / "data")
    results = []
    for r in range(args.runs):
        cache = work / f"cache{r}"
        fresh = _run(pack, cache, args)
        warm = _run(pack, cache, args)
        results.append({"fresh": fresh, "warm": warm})
        extra = (f", epoch0 {fresh['epoch0_s']:.2f} s / epoch1 {fresh['epoch1_s']:.2f} s"
                 if args.demo else "")
        print(f"run {r}: fresh first batch {fresh['first_batch_s']:.2f} s (import "
              f"{fresh['import_s']:.2f}, compile {fresh['compile_s']:.2f} s in "
              f"{len(fresh['compiles'])} compiles in the process, process {fresh['process_s']:.2f}"
              f" s, CPU {fresh['cpu_s']:.2f} s){extra}; warm first batch "
              f"{warm['first_batch_s']:.2f} s (import {warm['import_s']:.2f}, "
              f"{len(warm['compiles'])} compiles, process {warm['process_s']:.2f} s, CPU "
              f"{warm['cpu_s']:.2f} s); load average {os.getloadavg()[0]:.1f}")
        for c in sorted(fresh["compiles"], key=lambda c: -c["excl_s"])[:args.top]:
            print(f"    {c['excl_s']:6.2f} s own {c['incl_s']:6.2f} s incl  {c['name']}")
        if args.tree >= 0:
            print("\n".join("    " + ln for ln in _tree(fresh["compiles"], args.tree, args.sigs)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

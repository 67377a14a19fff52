"""Alternating windows (``fastload.bench.alternate``): a row waiting for its turn is paused as a
whole (its process, threads and DataLoader workers use no CPU), rows take their windows in
turn, and a row that fails does not stop the others."""
import time

import pytest

from fastload.bench.alternate import RowProcess, RowSpec, Settings, run_alternating
from fastload.bench.proctree import tree_cpu_seconds, tree_pids, tree_stopped
from fastload.bench.suite import row_environment


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from fastload.bench.data import synthetic_pack
    return synthetic_pack(tmp_path_factory.mktemp("cache"), 6, 0, 1)


SETTINGS = Settings(batch_size=2, size=64, workers=1, seconds=0.4, windows=2, warmup=0.1)


def test_a_waiting_row_is_paused_with_its_workers(packed, tmp_path):
    row = RowProcess(RowSpec("torch-seed", packed), SETTINGS, tmp_path, row_environment())
    try:
        assert row.receive(300, "setup")["phase"] == "ready"
        ans = row.run({"cmd": "warmup", "seconds": 0.1, "min_batches": 2}, 300)
        assert ans["batches"] >= 2
        pids = tree_pids(row.proc.pid)
        assert len(pids) >= 2  # the row and its DataLoader worker process
        assert tree_stopped(row.proc.pid)
        assert all(_state(p) in ("T", "t") for p in pids)
        cpu0 = tree_cpu_seconds(pids)
        time.sleep(0.8)  # a running worker would keep prefetching batches meanwhile
        assert tree_cpu_seconds(pids) - cpu0 < 0.02
        ans = row.run({"cmd": "window", "seconds": 0.2}, 300)
        assert ans["images"] >= 2 and ans["batches"] >= 1 and ans["cpu_seconds"] > 0
        assert row.run({"cmd": "finish"}, 120) is None
        res = row.result
        assert res["status"] == "ok" and res["images_per_s"]["windows"] == [ans["rate"]]
        assert res["pid"] == row.proc.pid and row.proc.returncode == 0
    finally:
        row.close()
    deadline = time.monotonic() + 10
    while any(_state(p) not in (None, "Z", "X") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_state(p) in (None, "Z", "X") for p in pids)  # nothing left running


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2]


def test_rows_alternate_and_a_failure_stays_in_its_row(packed, tmp_path):
    log = []
    specs = [RowSpec("bound-lmdb", packed), RowSpec("fastload-cpu", packed),
             RowSpec("bound-decode", tmp_path / "no-such-pack", key="broken")]
    res = run_alternating(specs, SETTINGS, tmp_path / "rows", row_environment(),
                          step_ms=lambda answers: 5.0, progress=log.append)
    assert res["broken"]["status"] == "failed" and "setup" in res["broken"]["reason"]
    for key in ("bound-lmdb", "fastload-cpu"):
        r = res[key]
        assert r["status"] == "ok", r
        assert len(r["images_per_s"]["windows"]) == 2
    assert res["fastload-cpu"]["step_ms"] == 5.0 and 0 <= res["fastload-cpu"]["data_wait"] <= 1
    assert "data_wait" not in res["bound-lmdb"]  # the bounds have no training loop
    rounds = [m for m in log if m.startswith("window ")]
    assert [m.split(":")[0] for m in rounds] == ["window 1/2", "window 2/2"]
    for m in rounds:  # each round: one window of every live row, in the order given
        assert m.index("bound-lmdb") < m.index("fastload-cpu")
    assert (tmp_path / "rows" / "broken.log").exists()


DRIVER = """
import json, sys, time
from pathlib import Path
from fastload.bench.alternate import RowProcess, RowSpec, Settings
from fastload.bench.proctree import tree_pids
from fastload.bench.suite import row_environment
row = RowProcess(RowSpec("torch-seed", Path(sys.argv[1])), Settings(batch_size=2, size=64,
                 workers=1), Path(sys.argv[2]), row_environment())
row.receive(300, "setup")
row.run({"cmd": "warmup", "seconds": 0.1, "min_batches": 2}, 300)
print(json.dumps(tree_pids(row.proc.pid)), flush=True)
time.sleep(600)
"""


def test_a_killed_driver_leaves_no_paused_row(packed, tmp_path):
    """The driver killed outright (no clean-up): its paused row dies with it
    (``PR_SET_PDEATHSIG``), and so do the row's paused DataLoader workers."""
    import json
    import signal
    import subprocess
    import sys
    drv = subprocess.Popen([sys.executable, "-c", DRIVER, str(packed), str(tmp_path)],
                           stdout=subprocess.PIPE, text=True, env=row_environment())
    try:
        pids = json.loads(drv.stdout.readline())
        assert len(pids) >= 2 and all(_state(p) in ("T", "t") for p in pids)
    finally:
        drv.send_signal(signal.SIGKILL)
        drv.wait()
    deadline = time.monotonic() + 15
    while any(_state(p) not in (None, "Z", "X") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(p, _state(p)) for p in pids if _state(p) not in (None, "Z", "X")] == []


def test_a_worker_error_is_one_line():
    from fastload.bench.runner import one_line
    e = ValueError("Caught ValueError in DataLoader worker process 1.\nOriginal Traceback "
                   "(most recent call last):\n  File x\nValueError: bad image")
    assert one_line(e) == ("ValueError: Caught ValueError in DataLoader worker process 1. ... "
                           "ValueError: bad image")
    assert one_line(KeyError("k")) == "KeyError: 'k'"

"""Two ranks under torchrun (CPU, gloo): disjoint shares, full coverage, equal batch counts."""
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.helpers.data import packed_dataset

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
sys.path[:0] = [{root!r}]
import torch.distributed as dist
dist.init_process_group("gloo")
from fastload import AugmentConfig, DataLoader
ld = DataLoader({data!r}, batch_size=2, shuffle=True, seed=3, device="cpu", num_threads=1,
                augment=AugmentConfig.off(out_size=(32, 32)))
out = {{"rank": ld.rank, "world_size": ld.world_size, "local_rank": ld.local_rank,
        "device": str(ld.device), "len": len(ld), "epochs": []}}
for epoch in range(2):
    ld.set_epoch(epoch)
    idx, nb = [], 0
    for b in ld:
        idx += b["index"].tolist()
        nb += 1
    out["epochs"].append({{"indices": idx, "batches": nb}})
with open(os.path.join({outdir!r}, "rank%d.json" % ld.rank), "w") as f:
    json.dump(out, f)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_torchrun_two_ranks_disjoint_full_coverage(tmp_path):
    n = 9  # odd: one padded sample
    data = packed_dataset(tmp_path / "d", n=n, width=64, height=48, keypoints=False)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT.format(root=str(ROOT),
                                                    data=str(data), outdir=str(tmp_path))))
    r = subprocess.run(["torchrun", "--nproc_per_node=2", "--standalone", str(script)],
                       capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert [x["rank"] for x in ranks] == [0, 1] and all(x["world_size"] == 2 for x in ranks)
    assert [x["local_rank"] for x in ranks] == [0, 1]
    assert all(x["device"] == "cpu" for x in ranks)
    assert ranks[0]["len"] == ranks[1]["len"] == 3  # ceil(ceil(9 / 2) / 2)
    orders = []
    for e in range(2):
        a, b = (x["epochs"][e] for x in ranks)
        assert a["batches"] == b["batches"] == 3
        assert len(a["indices"]) == len(b["indices"]) == 5
        union = a["indices"] + b["indices"]
        assert set(union) == set(range(n))        # every sample, once ...
        assert len(union) - len(set(union)) == 1  # ... plus the one documented pad
        assert b["indices"][-1] == a["indices"][0]  # the pad repeats the order's start
        assert not set(a["indices"]) & set(b["indices"][:-1])  # otherwise disjoint
        orders.append(a["indices"])
    assert orders[0] != orders[1]  # set_epoch reshuffles

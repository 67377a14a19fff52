"""Datasets by URL (fastload.store.remote): a real ``python -m http.server`` on 127.0.0.1 serves
packed datasets; the records and a loader batch equal the local copy's, a warm cache fetches
only the manifest, a changed dataset goes to a new folder, a corrupt shard is refused by name,
two processes opening one URL download each shard once, an interrupted download resumes."""
import multiprocessing as mp
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

from fastload.packing import pack  # noqa: E402
from fastload.store import MANIFEST_NAME, Dataset, StoreError  # noqa: E402
from fastload.store.remote import CACHE_ENV, dataset_cache_dir, is_url  # noqa: E402
from fastload.synth.datasets import write_dataset  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(www folder, base URL, GET counter): http.server on a free port, its log parsed."""
    root = tmp_path_factory.mktemp("remote")
    www = root / "www"
    www.mkdir()
    _pack(root / "src", www / "ds", seed=0)
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind",
                             "127.0.0.1", "--directory", str(www)],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 43210 (...) ..."
    port = int(re.search(r"port (\d+)", line).group(1))

    def gets(path_prefix):
        """path -> number of GET requests the server logged, for paths under the prefix."""
        log.flush()
        text = (root / "server.log").read_text()
        return Counter(m for m in re.findall(r'"GET (\S+) HTTP', text)
                       if m.startswith(path_prefix))
    yield www, f"http://127.0.0.1:{port}", gets
    proc.terminate()
    proc.wait(10)
    log.close()


def _pack(src: Path, out: Path, seed: int, n: int = 20, shard_size: int = 6):
    write_dataset(src, "coco", n_images=n, width=128, height=96, seed=seed, keypoints=True)
    pack(src, out, "coco", shard_size=shard_size, workers=1, progress=False, overwrite=True)
    return out


def _serve_copy(www: Path, name: str) -> Path:
    shutil.copytree(www / "ds", www / name)
    return www / name


def _same_records(a: Dataset, b: Dataset):
    assert len(a) == len(b) > 0
    assert all(a.get_raw(i) == b.get_raw(i) for i in range(len(a)))


def test_is_url():
    assert is_url("s3://bucket/ds") and is_url("https://host/ds") and is_url("file:///data/ds")
    assert not is_url("data/ds") and not is_url("/abs/ds") and not is_url(Path("s3://x"))


def test_open_by_url_equals_local_and_warm_cache_fetches_the_manifest_only(server, tmp_path):
    www, base, gets = server
    _serve_copy(www, "a")
    ds = Dataset(f"{base}/a", cache_dir=tmp_path, progress=False)
    local = Dataset(www / "a")
    _same_records(ds, local)
    assert ds.url == f"{base}/a" and ds.classes == local.classes
    assert ds.path.parent == dataset_cache_dir(f"{base}/a", tmp_path)
    assert (ds.path.parent / "url").read_text() == f"{base}/a\n"
    shards = [f"/a/{s.file}" for s in local.manifest.shards]
    digests = [f"/a/{s.digests}" for s in local.manifest.shards]
    assert gets("/a/") == Counter({"/a/manifest.json": 1, **{s: 1 for s in shards + digests}})
    assert sorted(p.name for p in ds.path.iterdir()) == sorted(  # no .part, no .lock
        [MANIFEST_NAME] + [f for s in local.manifest.shards for f in (s.file, s.digests)])
    again = Dataset(f"{base}/a", cache_dir=tmp_path, progress=False)
    assert again.path == ds.path
    assert gets("/a/") == Counter({"/a/manifest.json": 2, **{s: 1 for s in shards + digests}})
    # a shard deleted from the cache is fetched again
    (ds.path / local.manifest.shards[1].file).unlink()
    Dataset(f"{base}/a", cache_dir=tmp_path, progress=False)
    assert gets("/a/")[shards[1]] == 2 and gets("/a/")[shards[0]] == 1


def test_loader_batch_by_url_equals_local(server, tmp_path, monkeypatch):
    from fastload import AugmentConfig, DataLoader
    www, base, _ = server
    _serve_copy(www, "loader")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    kw = dict(batch_size=5, shuffle=True, seed=3, augment=AugmentConfig(out_size=(64, 64)),
              targets=["centernet"], device="cpu", backend="cpu", num_threads=1)
    by_url = next(iter(DataLoader(f"{base}/loader", **kw)))
    local = next(iter(DataLoader(str(www / "loader"), **kw)))
    assert by_url.keys() == local.keys()
    for k in local:
        assert by_url[k].dtype == local[k].dtype and by_url[k].equal(local[k]), k
    assert any((tmp_path / "env-cache").glob(f"loader-*/*/{MANIFEST_NAME}"))


def test_a_changed_dataset_is_a_new_version_never_mixed(server, tmp_path):
    www, base, _ = server
    served = _serve_copy(www, "changing")
    old = Dataset(f"{base}/changing", cache_dir=tmp_path, progress=False)
    old_bytes = {p.name: p.read_bytes() for p in old.path.iterdir()}
    _pack(tmp_path / "src2", served, seed=7, n=14)  # same URL, other records
    new = Dataset(f"{base}/changing", cache_dir=tmp_path, progress=False)
    assert new.path != old.path and new.path.parent == old.path.parent
    _same_records(new, Dataset(served))
    assert len(new) == 14 and new.get_raw(0) != old.get_raw(0)
    assert {p.name: p.read_bytes() for p in old.path.iterdir()} == old_bytes  # untouched


def test_a_corrupt_or_short_shard_is_refused_by_name(server, tmp_path):
    www, base, _ = server
    served = _serve_copy(www, "bad")
    shard = served / "shard-00001.lmdb"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern, same size
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError) as e:
        Dataset(f"{base}/bad", cache_dir=tmp_path, progress=False)
    assert str(e.value).startswith(f"{base}/bad/shard-00001.lmdb: the downloaded shard does "
                                   f"not match the manifest (its SHA-256 differs")
    version = next(dataset_cache_dir(f"{base}/bad", tmp_path).glob("*/"))
    assert not (version / MANIFEST_NAME).exists() and not (version / "shard-00001.lmdb").exists()
    assert not list(version.glob(".*.part"))
    shard.write_bytes(bytes(data[:-4096]))
    with pytest.raises(StoreError, match=r"bad/shard-00001.lmdb: .*\(\d+ bytes, the manifest "
                                         r"says \d+\)"):
        Dataset(f"{base}/bad", cache_dir=tmp_path, progress=False)
    with pytest.raises(StoreError, match="no manifest.json"):
        Dataset(f"{base}/nothing-here", cache_dir=tmp_path, progress=False)


def _open_after(url, cache, start_at, out_q):
    while time.time() < start_at:
        time.sleep(0.001)
    ds = Dataset(url, cache_dir=cache, progress=False)
    out_q.put((str(ds.path), len(ds)))


def test_two_processes_download_each_shard_once(server, tmp_path):
    www, base, gets = server
    served = www / "race"
    _pack(tmp_path / "src", served, seed=4, n=36, shard_size=3)  # 12 shards
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 4.0  # both are imported and waiting by then
    procs = [ctx.Process(target=_open_after, args=(f"{base}/race", str(tmp_path), start_at, q))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    results = [q.get(timeout=5) for _ in procs]
    assert results[0] == results[1] and results[0][1] == 36
    files = [f"/race/{f}" for s in Dataset(served).manifest.shards for f in (s.file, s.digests)]
    assert gets("/race/") == Counter({"/race/manifest.json": 2, **{f: 1 for f in files}})


def test_an_interrupted_download_resumes(server, tmp_path):
    import hashlib
    www, base, gets = server
    served = _serve_copy(www, "resume")
    local = Dataset(served)
    entry = local.manifest.shards[2]
    whole = (served / entry.file).read_bytes()
    version = hashlib.sha256((served / MANIFEST_NAME).read_bytes()).hexdigest()[:16]

    def leave_part(url, cache, data):  # what a download killed half way leaves in the cache
        d = dataset_cache_dir(url, cache) / version
        d.mkdir(parents=True)
        (d / f".{entry.file}.part").write_bytes(data)

    # file:// reads from an offset: the good half is kept, the rest appended
    url = served.as_uri()
    leave_part(url, tmp_path / "c1", whole[: len(whole) // 2])
    _same_records(Dataset(url, cache_dir=tmp_path / "c1", progress=False), local)
    # proof that the half on disk was used: a garbage half makes the checksum fail, the
    # garbage is removed, and the next open downloads the shard whole
    leave_part(url, tmp_path / "c2", b"\0" * (len(whole) // 2))
    with pytest.raises(StoreError, match=f"{entry.file}: the downloaded shard does not match"):
        Dataset(url, cache_dir=tmp_path / "c2", progress=False)
    _same_records(Dataset(url, cache_dir=tmp_path / "c2", progress=False), local)
    # http.server ignores range requests: the resume falls back to a whole download
    leave_part(f"{base}/resume", tmp_path / "c3", whole[:1000])
    _same_records(Dataset(f"{base}/resume", cache_dir=tmp_path / "c3", progress=False), local)
    assert gets("/resume/")[f"/resume/{entry.file}"] == 2  # the refused range, the whole file


def test_cache_dir_is_for_urls(tmp_path, server):
    www, _, _ = server
    with pytest.raises(ValueError, match="cache_dir is for datasets opened by URL"):
        Dataset(www / "ds", cache_dir=tmp_path)


def test_without_fsspec_the_error_names_the_extra(monkeypatch, tmp_path):
    from fastload.optional import MissingDependency
    monkeypatch.setitem(sys.modules, "fsspec", None)  # what `import fsspec` meets when absent
    with pytest.raises(MissingDependency, match=r"pip install 'fastload\[remote\]'"):
        Dataset("s3://bucket/ds", cache_dir=tmp_path)


def test_info_command_takes_a_url(server, tmp_path, monkeypatch, capsys):
    from fastload.cli import main as cli_main
    www, base, _ = server
    _serve_copy(www, "cli")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cli_main(["info", f"{base}/cli"]) == 0
    assert "records      20 in 4 shard(s)" in capsys.readouterr().out


def test_verify_command_takes_a_url_and_checks_records_by_their_digests(server, tmp_path,
                                                                         monkeypatch, capsys):
    """The digests files come with the shards (checked against the manifest), so verifying a
    dataset opened by URL checks each record, not only whole shards."""
    from fastload.cli import main as cli_main
    www, base, _ = server
    _serve_copy(www, "verify")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cli_main(["verify", f"{base}/verify", "-q"]) == 0
    out, err = capsys.readouterr()
    assert "verify: OK, 20 records" in out and "note" not in err


def test_a_corrupt_digests_file_is_refused_by_name(server, tmp_path):
    www, base, _ = server
    served = _serve_copy(www, "bad-digests")
    entry = Dataset(served).manifest.shards[1]
    data = bytearray((served / entry.digests).read_bytes())
    data[3] ^= 0xFF
    (served / entry.digests).write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"{entry.digests}: the digests file does not match"):
        Dataset(f"{base}/bad-digests", cache_dir=tmp_path, progress=False)

"""fastload.formats.files: only regular files are read, and one containment rule on
resolved paths (real FIFOs, devices, symlinks)."""
import errno
import os
import threading

import pytest

from fastload.formats.files import SpecialFileError, inside_root, read_regular, read_regular_text


def test_regular_files_and_symlinks_to_them_are_read(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    os.symlink("a.txt", tmp_path / "link")
    assert read_regular(tmp_path / "a.txt") == b"abc" == read_regular(tmp_path / "link")
    assert read_regular_text(tmp_path / "link") == "abc"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.symlink("fifo", tmp_path / "link")
    result = {}

    def read(p):
        try:
            read_regular(p)
        except SpecialFileError as e:
            result[p.name] = e
    threads = [threading.Thread(target=read, args=(tmp_path / n,), daemon=True)
               for n in ("fifo", "link")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "reading a FIFO blocked"
    assert set(result) == {"fifo", "link"}
    e = result["fifo"]
    assert isinstance(e, OSError) and e.filename == str(tmp_path / "fifo")
    assert e.strerror == "is a FIFO (named pipe), not a regular file; refused"


def test_devices_and_directories_are_refused(tmp_path):
    with pytest.raises(SpecialFileError, match="character device"):
        read_regular("/dev/zero")
    os.symlink("/dev/urandom", tmp_path / "random.jpg")
    with pytest.raises(SpecialFileError, match="character device"):
        read_regular(tmp_path / "random.jpg")
    with pytest.raises(IsADirectoryError) as e:
        read_regular(tmp_path)
    assert e.value.errno == errno.EISDIR
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent")


def test_inside_root_resolves_dots_and_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.jpg").write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"o")
    os.symlink(root / "sub" / "x.jpg", root / "in.jpg")
    os.symlink(tmp_path / "outside.jpg", root / "out.jpg")
    os.symlink(tmp_path, root / "up")
    assert inside_root(root / "sub" / "x.jpg", root) == "sub/x.jpg"
    assert inside_root(root / "in.jpg", root) == "sub/x.jpg"  # the file it resolves to
    assert inside_root(root / "out.jpg", root) is None
    assert inside_root(root / "up" / "outside.jpg", root) is None
    assert inside_root(root / "sub" / ".." / ".." / "outside.jpg", root) is None
    assert inside_root(root, root) is None
    assert inside_root(tmp_path / "rootx" / "a.jpg", root) is None  # a prefix is not inside
    link_root = tmp_path / "nas"
    os.symlink(root, link_root)  # a symlinked root folder is fine
    assert inside_root(link_root / "sub" / "x.jpg", link_root) == "sub/x.jpg"


def test_resolve_agrees_with_realpath(tmp_path):
    from fastload.formats.files import resolve
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo")
    os.symlink("d", tmp_path / "ld")
    os.symlink(tmp_path / "ld" / "f", tmp_path / "lf")
    os.symlink("/dev/zero", tmp_path / "z")
    for p in ("d/f", "ld/f", "lf", "d/../d/f", "fifo", "z", "absent", "ld/absent", "d", "."):
        assert resolve(tmp_path / p) == os.path.realpath(tmp_path / p), p

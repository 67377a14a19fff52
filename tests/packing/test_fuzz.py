"""The generated fuzz corpus (tests/helpers/fuzz.py): malformed annotation files of every
format, each packed for real, skip-and-count and under --strict. No traceback, ever: each
mutation is a counted problem naming its file, or a PackError naming the file."""
import shutil

import pytest

from fastload.packing import PackError, pack
from tests.helpers.fuzz import FORMATS, mutations, write_valid

N_PER_FORMAT = 24
SEED = 20240611


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    for fmt in FORMATS:
        write_valid(root / fmt, fmt)
    return root


def _problem_lines(out):
    return (out / "problems.txt").read_text().splitlines()[1:]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_mutation_is_counted_never_a_traceback(pristine, tmp_path, fmt):
    failures = []
    for k, m in enumerate(mutations(fmt, SEED + FORMATS.index(fmt), N_PER_FORMAT)):
        src = tmp_path / f"src{k}"
        shutil.copytree(pristine / fmt, src)
        m.apply(src)
        out = tmp_path / f"out{k}"
        try:
            s = pack(src, out, fmt, workers=1, progress=False, allow_empty=True)
        except PackError as e:  # damage to the file as a whole: one error naming it
            if not any(w in str(e) for w in m.mentions + (str(src),)):
                failures.append(f"{m.name}: the error names none of {m.mentions}: {e}")
        else:
            lines = _problem_lines(out)
            if s.problems < 1 or not lines:
                failures.append(f"{m.name}: packed with no problem counted")
            elif not any(w in ln for ln in lines for w in m.mentions):
                failures.append(f"{m.name}: no problem names {m.mentions}: {lines[:3]}")
            with pytest.raises(PackError, match="strict"):
                pack(src, tmp_path / f"strict{k}", fmt, workers=1, progress=False, strict=True)
    assert not failures, "\n".join(failures)


def test_the_corpus_is_the_same_every_run():
    a = [m.name for m in mutations("coco", 7, 30)]
    assert a == [m.name for m in mutations("coco", 7, 30)] and len(set(a)) > 10

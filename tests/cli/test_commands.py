"""The info, verify, pack and demo commands through fastload.cli.main (in this process)."""
from fastload.cli import main as cli_main
from fastload.store import Dataset
from fastload.synth.datasets import write_dataset


def test_pack_info_verify(tmp_path, capsys):
    write_dataset(tmp_path / "src", "coco", n_images=7, width=96, height=64, seed=3)
    assert cli_main(["pack", str(tmp_path / "src"), str(tmp_path / "out"), "-f", "coco", "-q",
                     "--shard-size", "3", "-j", "1"]) == 0
    assert "packed 7 images" in capsys.readouterr().out
    assert cli_main(["info", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "7 in 3 shard(s)" in text and "person" in text
    assert cli_main(["verify", "-q", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("verify: OK, 7 records")
    assert cli_main(["info", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("fastload info: ")


def test_demo_cli(tmp_path, capsys):
    assert cli_main(["demo", "--dir", str(tmp_path), "--n", "3"]) == 0
    text = capsys.readouterr().out
    assert "packed 3 images" in text and "records      3 in 1 shard(s)" in text
    assert len(Dataset(tmp_path / "packed")) == 3
    assert "epoch 0: 3 images" in text and "epoch 1: 3 images" in text


def test_pack_help_says_the_policies(capsys):
    import pytest
    with pytest.raises(SystemExit) as e:
        cli_main(["pack", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--max-pixels N", "0: no limit", "FASTLOAD_MAX_IMAGE_PIXELS", "--allow-empty",
                  "saying what the reader looked for", "a fastload dataset with --overwrite",
                  "docs/bad_input.md"):
        assert words in text, words

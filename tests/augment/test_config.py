"""AugmentConfig: generated from the op table, validation, shorthand, (de)serialization."""
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from fastload.augment.config import FIELDS, AugmentConfig
from fastload.augment.ops import OPS, PIXEL_OPS

LEGACY_DEFAULTS = dict(
    out_size=(512, 512), keep_aspect=True, pad_value=0.0, hflip_prob=0.5, vflip_prob=0.0,
    rotate_deg=(-15.0, 15.0), scale=(0.8, 1.2), translate=(-0.1, 0.1), hue_deg=(-18.0, 18.0),
    noise_sigma=(0.0, 8.0), shadow_prob=0.3, shadow_count=(1, 2), shadow_darkness=(0.5, 0.8),
    mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), dtype="float32",
    min_visible=0.1)


def test_fields_and_defaults_are_the_legacy_ones_plus_new_ops():
    cfg = AugmentConfig()
    for k, v in LEGACY_DEFAULTS.items():
        assert getattr(cfg, k) == v, k
    assert cfg.brightness == (0.0, 0.0) and cfg.contrast == (0.0, 0.0)  # new op: off
    names = [f.name for f in FIELDS]
    assert set(names) == set(LEGACY_DEFAULTS) | {"brightness", "contrast"}
    assert [f.name for f in __import__("dataclasses").fields(AugmentConfig)] == names
    for f in FIELDS:  # the generated docstring documents every field
        assert f"``{f.name}``" in AugmentConfig.__doc__


def test_docs_table_lists_every_field():
    text = (Path(__file__).parents[2] / "docs" / "augment.md").read_text()
    for f in FIELDS:
        assert re.search(rf"`{f.name}`", text), f.name


def test_off_turns_every_op_off_and_keeps_overrides():
    cfg = AugmentConfig.off(out_size=(64, 80), hue_deg=(-5, 5))
    assert cfg.out_size == (64, 80) and cfg.hue_deg == (-5.0, 5.0)
    assert [op.name for op in PIXEL_OPS if op.active(cfg)] == ["hue"]
    off = AugmentConfig.off()
    assert not any(op.active(off) for op in PIXEL_OPS)
    assert (off.hflip_prob, off.vflip_prob, off.rotate_deg, off.scale, off.translate) == \
        (0.0, 0.0, (0.0, 0.0), (1.0, 1.0), (0.0, 0.0))
    on = AugmentConfig()
    assert [op.name for op in PIXEL_OPS if op.active(on)] == ["hue", "shadow", "noise"]
    assert [op.name for op in PIXEL_OPS if op.active(AugmentConfig(contrast=0.1))] == \
        ["hue", "brightness_contrast", "shadow", "noise"]


@pytest.mark.parametrize("field,value,want", [
    ("rotate_deg", 15, (-15.0, 15.0)), ("hue_deg", 20.5, (-20.5, 20.5)),
    ("translate", 0.1, (-0.1, 0.1)), ("brightness", 0.2, (-0.2, 0.2)),
    ("contrast", 0.3, (-0.3, 0.3)), ("scale", 0.2, (0.8, 1.2)), ("rotate_deg", 0, (0.0, 0.0)),
    ("rotate_deg", [-3, 7], (-3.0, 7.0)), ("scale", np.float32(0.5), (0.5, 1.5)),
])
def test_number_is_the_symmetric_range(field, value, want):
    got = getattr(AugmentConfig(**{field: value}), field)
    assert got == pytest.approx(want) and type(got) is tuple and all(type(x) is float for x in got)


@pytest.mark.parametrize("field,value", [
    ("rotate_deg", -15), ("rotate_deg", "15"), ("rotate_deg", (10, -10)), ("rotate_deg", (1, 2, 3)),
    ("rotate_deg", float("nan")), ("rotate_deg", None), ("rotate_deg", True),
    ("scale", 1.0), ("scale", -0.1), ("scale", (0.0, 1.0)), ("hue_deg", (0, "a")),
    ("contrast", (-1.5, 0.0)), ("noise_sigma", 3.0), ("noise_sigma", (-1.0, 2.0)),
    ("shadow_count", (1.5, 2)), ("shadow_count", 2), ("shadow_darkness", (-0.1, 0.5)),
    ("hflip_prob", 1.5), ("hflip_prob", "0.5"), ("shadow_prob", -0.1), ("min_visible", 2),
    ("out_size", (0, 10)), ("out_size", 512), ("out_size", (10.5, 10)), ("keep_aspect", "yes"),
    ("pad_value", "0"), ("mean", (1, 2)), ("std", (1, 0, 1)), ("dtype", "float64"),
])
def test_malformed_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"AugmentConfig\.{field}\b"):
        AugmentConfig(**{field: value})


def test_op_fields_are_keyword_only():
    assert AugmentConfig((32, 48), False, 3.0).out_size == (32, 48)
    with pytest.raises(TypeError):
        AugmentConfig((32, 48), False, 3.0, 0.5)


def test_unknown_keys_and_equality():
    with pytest.raises(ValueError, match="unknown AugmentConfig keys"):
        AugmentConfig.from_dict({"rotate": 5})
    assert AugmentConfig(hue_deg=(-20, 20)) == AugmentConfig(hue_deg=20.0)
    assert AugmentConfig(hue_deg=(-20, 20)) != AugmentConfig(hue_deg=10)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    cfg = AugmentConfig(out_size=(96, 128), rotate_deg=30, brightness=0.2, contrast=(-0.1, 0.3),
                        shadow_count=(0, 3), dtype="float16", keep_aspect=False)
    path = tmp_path / f"aug{suffix}"
    cfg.to_file(path)
    text = path.read_text()
    if suffix == ".json":
        assert json.loads(text) == cfg.to_dict()
    else:
        assert not text.lstrip().startswith("{")  # YAML block style, not JSON
        assert yaml.safe_load(text) == cfg.to_dict()
        assert "rotate_deg:\n- -30.0\n- 30.0" in text
    assert AugmentConfig.from_file(path) == cfg


def test_from_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("rotate_deg: [10, -10]\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: AugmentConfig\.rotate_deg"):
        AugmentConfig.from_file(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="bad.yaml: expected a mapping"):
        AugmentConfig.from_file(p)
    p = tmp_path / "short.yaml"
    p.write_text("rotate_deg: 20\nscale: 0.25\n")  # shorthand works in files too
    cfg = AugmentConfig.from_file(p)
    assert cfg.rotate_deg == (-20.0, 20.0) and cfg.scale == (0.75, 1.25)


def test_pickles_like_a_module_level_class():
    cfg = AugmentConfig(brightness=0.1)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert AugmentConfig.__module__ == "fastload.augment.config"
    assert [op.name for op in OPS][:1] == ["affine"]

"""fastload.limits: the one pixel cap (default, environment variable, module setting,
per-call argument)."""
import os
import subprocess
import sys

import pytest

from fastload import limits
from fastload.limits import ImageTooLarge, check_image_size, parse_max_pixels
from tests.helpers.env import ROOT


def test_default_is_pillows_error_threshold():
    from PIL import Image
    assert limits.DEFAULT_MAX_IMAGE_PIXELS == 178_956_970 == 2 * Image.MAX_IMAGE_PIXELS


def test_check_image_size(monkeypatch):
    check_image_size(13000, 13000, "a.jpg")  # 169 M pixels: under the default
    with pytest.raises(ImageTooLarge, match=r"^a.jpg: 60000x60000 is 3,600,000,000 pixels, "
                                            r"over the limit of 178,956,970"):
        check_image_size(60000, 60000, "a.jpg")
    assert isinstance(ImageTooLarge("x"), ValueError)
    with pytest.raises(ImageTooLarge, match="limit of 100"):
        check_image_size(20, 20, "b.png", max_pixels=100)
    check_image_size(60000, 60000, "a.jpg", max_pixels=0)  # 0: no limit
    check_image_size(60000, 60000, "a.jpg", max_pixels="none")
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 10)  # read at call time
    with pytest.raises(ImageTooLarge):
        check_image_size(4, 4, "c")
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", None)
    check_image_size(10 ** 6, 10 ** 6, "c")


@pytest.mark.parametrize("value, want", [(None, None), (0, None), ("0", None), ("none", None),
                                         ("Off", None), (5, 5), ("1_000", 1000), ("7", 7)])
def test_parse_max_pixels(value, want):
    assert parse_max_pixels(value) == want


@pytest.mark.parametrize("value", [-1, "-5", "lots", 1.5, True, [1]])
def test_parse_max_pixels_refuses(value):
    with pytest.raises(ValueError, match="max_pixels"):
        parse_max_pixels(value)


def test_environment_variable():
    def limit(value):
        env = dict(os.environ, PYTHONPATH=str(ROOT), FASTLOAD_MAX_IMAGE_PIXELS=value)
        return subprocess.run([sys.executable, "-c", "import fastload.limits as l; "
                               "print(l.MAX_IMAGE_PIXELS)"], env=env, capture_output=True,
                              text=True)
    assert limit("1000").stdout.strip() == "1000"
    assert limit("0").stdout.strip() == "None"
    p = limit("big")
    assert p.returncode != 0 and "environment variable FASTLOAD_MAX_IMAGE_PIXELS" in p.stderr

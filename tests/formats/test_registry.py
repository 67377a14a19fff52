import pytest

from fastload.formats import READERS, get_reader


def test_reader_registry_errors():
    assert set(READERS) == {"coco", "labelme", "via", "yolo", "masks"}
    with pytest.raises(ValueError, match="unknown input format 'nope'"):
        get_reader("nope")
    assert callable(get_reader("coco").read)

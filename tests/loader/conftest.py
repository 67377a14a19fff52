import pytest

from tests.helpers.data import blob_dataset


@pytest.fixture
def blobs():
    """10 small JPEG records in memory (a fresh copy per test: tests corrupt them)."""
    return blob_dataset(10)

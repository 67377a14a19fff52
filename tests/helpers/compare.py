"""Comparing target dicts (kernel vs reference) in the target tests."""
import numpy as np


def assert_same(a, b, relative=False):
    """Same keys, dtypes and shapes; integer arrays equal; floats within 1e-6
    (``relative``: 1e-6 times the reference's largest magnitude, at least 1e-6)."""
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if a[k].dtype.kind in "iub":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            atol = 1e-6 * max(1, np.abs(b[k]).max()) if relative else 1e-6
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)

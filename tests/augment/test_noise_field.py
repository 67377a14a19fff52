"""The noise fields fed to the DALI graph: the fused CPU kernel's generator, whole-batch, in
Numba (CPU) and torch (any device), against the NumPy reference ``noise_normals``."""
import numpy as np
import pytest
import torch

from fastload.augment import noise as noise_mod
from fastload.augment.noise import (noise_field, noise_field_numba, noise_field_torch,
                                    noise_normals)
from tests.helpers.env import requires_gpu

SEEDS = [0, 1, 123456789, 2**63, 2**64 - 1]
SIGMAS = [3.0, 0.0, 7.25, 1.0, 12.5]


def reference(seeds, sigmas, h, w):
    return np.stack([(s * noise_normals(x, h, w)).astype(np.float32)
                     for x, s in zip(seeds, sigmas)])


@pytest.mark.parametrize("hw", [(37, 53), (128, 96)])
def test_torch_field_is_bit_identical_to_the_reference(hw):
    """uint64 arithmetic as int64 (wrap-around multiply, masked shifts), the same table,
    the tails from the reference's own function: every bit equal."""
    ref = reference(SEEDS, SIGMAS, *hw)
    got = noise_field_torch(SEEDS, SIGMAS, *hw, device="cpu")
    assert got.dtype == torch.float32 and got.shape == (5,) + hw + (3,)
    assert np.array_equal(got.numpy(), ref)
    assert (got[1] == 0).all() and got[0].abs().max() > 3 * 3.0  # tails are reached


def test_torch_field_chunks_do_not_matter(monkeypatch):
    whole = noise_field_torch(SEEDS, SIGMAS, 20, 30)
    monkeypatch.setattr(noise_mod, "_CHUNK_PIXELS", 600)  # one sample per chunk
    assert torch.equal(noise_field_torch(SEEDS, SIGMAS, 20, 30), whole)


def test_numba_field_is_the_kernels_generator():
    """Numba's field uses the fused kernel's own mix64 / normal21; the tails there use libm's
    log where the reference uses NumPy's: equal up to the last float32 bit."""
    ref = reference(SEEDS, SIGMAS, 64, 80)
    got = noise_field_numba(SEEDS, SIGMAS, 64, 80)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    assert np.mean(got == ref) > 0.999
    assert isinstance(noise_field(SEEDS, SIGMAS, 4, 5), np.ndarray)
    assert isinstance(noise_field(SEEDS, SIGMAS, 4, 5, device=torch.device("cpu")), np.ndarray)


def test_bad_sigmas_refused():
    with pytest.raises(ValueError, match=">= 0"):
        noise_field_numba([1], [-1.0], 4, 4)
    with pytest.raises(ValueError, match="2 noise seeds but 1 sigmas"):
        noise_field_torch([1, 2], [1.0], 4, 4)


@requires_gpu
def test_cuda_field_equals_the_cpu_field():
    """On the GPU (the DALI GPU path's generator): bit-identical to the CPU's."""
    cpu = noise_field_torch(SEEDS, SIGMAS, 96, 128)
    dev = torch.device("cuda", 0)
    gpu = noise_field(SEEDS, SIGMAS, 96, 128, device=dev)
    assert gpu.device == dev and torch.equal(gpu.cpu(), cpu)

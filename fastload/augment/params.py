"""Per-sample augmentation parameters, drawn from (seed, epoch, index) by a counter-based generator.

INTERFACE (owned by the augmentation issue; the loader, the CPU backend, `bench` and
`inspect` build against it):

    @dataclass
    class SampleParams:
        matrix: np.ndarray        # float32 (3, 3): source image pixel -> output pixel (continuous coords)
        hflip: bool
        vflip: bool
        hue_deg: float            # hue rotation in degrees
        noise_sigma: float        # gaussian noise std in 0..255 units (0 = none)
        noise_seed: int           # uint64 key of the noise generator
        shadow_polygons: list     # list of float32 (N, 2) polygons in OUTPUT pixel coords
        shadow_darkness: float    # multiplicative factor inside shadows (1.0 = no shadow)

    def sample_params(cfg: AugmentConfig, seed: int, epoch: int, index: int,
                      src_h: int, src_w: int) -> SampleParams
        Same inputs -> bit-identical outputs on any machine/thread/order.

The implementation replaces this stub.
"""

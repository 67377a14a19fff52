"""Move annotations by a sample's matrix, clip them to the output frame.

INTERFACE (owned by the augmentation issue):

    @dataclass
    class TransformedInstances:       # flat, like fastload.record.Record
        points: np.ndarray            # float32 (P, 2) output pixel coords, clipped to the frame
        part_offsets: np.ndarray      # int32 (n_parts + 1,)
        inst_parts: np.ndarray        # int32 (n + 1,)
        labels: np.ndarray            # int32 (n,)
        boxes: np.ndarray             # float32 (n, 4) tight x1,y1,x2,y2 of the clipped parts
        ignore: np.ndarray            # bool (n,)
        keypoints: np.ndarray | None  # float32 (n, K, 3); outside the frame -> visibility 0;
                                      # left/right swapped by flip_pairs on a horizontal flip
        src_index: np.ndarray         # int32 (n,) index of the instance in the record

    def transform_instances(record: Record, params: SampleParams, out_size: tuple[int, int],
                            min_visible: float = 0.1, flip_pairs=None) -> TransformedInstances

The implementation replaces this stub.
"""

"""Write a synthetic dataset in one of the input formats (a thin wrapper over fastload.synth).

    python3 tools/synth_dataset.py OUT --format coco --n 200 [--keypoints]
"""
import sys

from fastload.synth.datasets import main

if __name__ == "__main__":
    sys.exit(main())

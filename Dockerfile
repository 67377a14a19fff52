# An image in which fastload and its tests run on an NVIDIA GPU.
# DALI's wheel for CUDA 13 (nvidia-dali-cuda130) needs a CUDA 13 driver on the host;
# the base image brings the CUDA 13 runtime. Build: docker build -t fastload .
# Run:   docker run --gpus all --rm fastload python3 -m pytest
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_BREAK_SYSTEM_PACKAGES=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-dev python3-venv git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/fastload
COPY . .
# torch built for CUDA 13.0, then fastload with DALI and the dev extras. setuptools and wheel
# outside any build isolation: tests/test_install.py builds a wheel of the tree offline.
RUN python3 -m pip install torch --index-url https://download.pytorch.org/whl/cu130 \
 && python3 -m pip install 'setuptools>=61' wheel \
 && python3 -m pip install -e '.[dev]'
# Compile fastload's Numba kernels into the image (Numba's cache beside the modules and
# ~/.cache/fastload/kernels), so that a container's first batch does not wait for them. Numba
# keys its cache on the CPU model: on a host with another CPU they are compiled again, once.
RUN fastload warmup

CMD ["fastload", "demo"]

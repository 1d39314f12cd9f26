#!/usr/bin/env bash
# Install torch into the given Python environment before the project itself, so that pip never
# resolves a bare `torch` requirement to the multi-GB CUDA build on a machine without a GPU.
#   - torch already importable: nothing to do;
#   - an NVIDIA GPU answers (nvidia-smi): the ordinary PyPI build, which ships CUDA;
#   - otherwise: a CPU wheel from pip's local wheel folders (find-links) when one is there,
#     else PyTorch's CPU wheel index, else (no access to it) the ordinary build.
set -euo pipefail
PY=${1:?usage: install_torch.sh PATH/TO/python}
if "$PY" -c "import torch" 2>/dev/null; then
  echo "install_torch: torch already installed"
  exit 0
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "install_torch: GPU found, installing the CUDA build of torch"
  pip_install "torch>=2.2"
elif pip_install --no-index --no-deps torch 2>/dev/null; then
  echo "install_torch: installed a local CPU wheel of torch"
  # the wheel went in without its dependencies; pull those now (torch itself is satisfied)
  pip_install "torch==$("$PY" -c 'from importlib.metadata import version; print(version("torch"))')"
elif pip_install torch --index-url https://download.pytorch.org/whl/cpu; then
  echo "install_torch: installed torch from the CPU wheel index"
else
  echo "install_torch: CPU index unreachable, installing the default torch build"
  pip_install "torch>=2.2"
fi

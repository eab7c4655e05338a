#!/usr/bin/env bash
# Create .venv (if missing) and install kontext-teach with its pinned dependencies.
# Called by `make setup` (and so by `make lab`, `make test`, `make book`).
# Needs only python3 >= 3.11 and pip. Without an NVIDIA GPU it installs torch's CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=$(sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml)

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "kontext-teach needs Python 3.11 or newer (diffusers 0.42 and transformers 5 do);" >&2
  echo "found: $("$PYTHON" --version 2>&1). Install one (e.g. conda env create -f environment.yml)" >&2
  echo "or run: make PYTHON=python3.11 ..." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
if "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  : # the pinned torch is already there (CPU or CUDA build): keep it
elif has_gpu || [ "$(uname -s)" != Linux ]; then
  "${PIP[@]}" install -q "torch==$TORCH_VERSION"
else
  # No GPU: the CPU build (about 200 MB instead of several GB). A wheel already on this
  # machine (pip's find-links) is used first, then PyTorch's CPU index.
  "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null \
    || "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
fi
"${PIP[@]}" install -q -e ".[dev]"
# Only for the CLIP BPE file used by `python -m kontext_teach.toy.build_embedded` (never imported).
"${PIP[@]}" install -q --no-deps open-clip-torch==3.3.0
"$VENV/bin/python" -m ipykernel install --sys-prefix --name kontext-teach --display-name "Python (kontext-teach)" >/dev/null
# Kernels keep jupyter's default TCP transport on localhost: with "ipc" (Unix sockets), nbconvert's
# executor waited 60 s and reported "Kernel didn't respond" on every notebook (jupyter_client 8, here).
# The kernel's "running over TCP without encryption" notice is harmless: it listens on 127.0.0.1 only.
rm -f "$VENV/etc/jupyter/jupyter_config.json"
# JupyterLab inside this venv: no "fetch Jupyter news?" pop-up and no update check on first start
# (both would ask the internet; the series runs offline). Users can still change it in Settings.
mkdir -p "$VENV/share/jupyter/lab/settings"
cat > "$VENV/share/jupyter/lab/settings/overrides.json" <<'JSON'
{
  "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}
}
JSON
"$VENV/bin/python" -c "import torch, diffusers, kontext_teach; print('kontext-teach ready: torch', torch.__version__, '| diffusers', diffusers.__version__)"

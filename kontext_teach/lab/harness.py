"""What every notebook uses: a first-cell ``setup()`` and the ``compare()`` check."""

import importlib.metadata
import io
import logging
import math
import os
import platform
import random
import socket
import warnings

import numpy as np
import torch

from .loading import default_device

OFFLINE_ENV = "KONTEXT_TEACH_OFFLINE"
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers")


def figure_png(fig, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it.

    For widgets: put the bytes in an ``ipywidgets.Image``, so that the picture lives inside the
    widget and the cell writes no output of its own (strict nbval then compares nothing extra).
    """
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


class NetworkDisabledError(RuntimeError):
    """Raised when code tries to open a non-local connection while the series runs offline."""


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        versions[name] = importlib.metadata.version(name)
    from .. import __version__

    versions["kontext_teach"] = __version__
    return versions


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def avoid_failing_attention_backends(device) -> None:
    """On CUDA, turn off cuDNN's attention: its backward pass failed on Flux (H200, torch 2.11); PyTorch then
    uses its flash or memory-efficient kernel. Nothing changes on CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def silence_libraries() -> None:
    """No progress bars, no library warnings: notebooks must not write to stderr."""
    import diffusers
    import transformers

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


_real_connect = socket.socket.connect


def _local_only_connect(sock, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127.") or sock.family == socket.AF_UNIX):
        return _real_connect(sock, address)
    raise NetworkDisabledError(f"network access to {address!r} while {OFFLINE_ENV}=1 (the series runs offline)")


def forbid_network() -> None:
    """Make any non-loopback connection raise (used by the tests and by setup() when offline)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    socket.socket.connect = _local_only_connect


def setup(seed: int = 0) -> str:
    """First cell of every notebook: print versions and device, seed, silence, return the device."""
    silence_libraries()
    if os.environ.get(OFFLINE_ENV) == "1":
        forbid_network()
    seed_everything(seed)
    torch.set_printoptions(precision=4, sci_mode=False)
    device = default_device()
    print(" | ".join(f"{k} {v}" for k, v in package_versions().items()) + f" | device {device}")
    return device


def diff_bucket(diff: float) -> str:
    """A difference as the power of ten above it ("0", "<1e-06", ...): stable across CPUs."""
    if diff == 0:
        return "0"
    return f"<1e{math.floor(math.log10(diff)) + 1:+03d}"


def compare(name: str, ours: torch.Tensor, theirs: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Check a from-scratch result against the library's: print one line, raise on mismatch.

    Prints name, shape, whether the tensors are bit-identical, whether they are close within
    (atol, rtol), and the largest absolute difference as a power of ten (stable across CPUs).
    Returns nothing, so that a call on a cell's last line adds no machine-dependent output.
    """
    ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
    if ours.shape != theirs.shape:
        raise AssertionError(f"{name}: shape {tuple(ours.shape)} != library's {tuple(theirs.shape)}")
    ours64, theirs64 = ours.detach().cpu().double(), theirs.detach().cpu().double()
    if not (torch.isfinite(ours64).all() and torch.isfinite(theirs64).all()):
        raise AssertionError(f"{name}: non-finite values (ours: {int((~torch.isfinite(ours64)).sum())}, "
                             f"library's: {int((~torch.isfinite(theirs64)).sum())})")
    exact = torch.equal(ours64, theirs64)
    close = torch.allclose(ours64, theirs64, atol=atol, rtol=rtol)
    max_diff = (ours64 - theirs64).abs().max().item() if ours.numel() else 0.0
    print(f"{name:<28} shape {str(tuple(ours.shape)):<18} exact {str(exact):<5} "
          f"allclose {str(close):<5} max|diff| {diff_bucket(max_diff)}")
    if not close:
        raise AssertionError(f"{name}: differs from the library (max |diff| {max_diff:.3e} > atol {atol})")

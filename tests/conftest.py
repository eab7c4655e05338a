"""Shared test set-up: offline, GPU cells skipped without CUDA, only text outputs compared."""

import pathlib
import signal

import pytest
import torch

from kontext_teach.lab.harness import forbid_network, silence_libraries

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Every test runs offline: any non-loopback connection raises NetworkDisabledError.
forbid_network()
silence_libraries()  # no progress bars or library warnings in test logs

NOT_COMPARED = ("text/html", "image/svg+xml", "application/vnd.jupyter.widget-view+json")


def pytest_collection_modifyitems(config, items):
    for item in items:
        notebook = getattr(item, "parent", None)
        if hasattr(notebook, "skip_compare") and NOT_COMPARED[0] not in notebook.skip_compare:
            notebook.skip_compare = tuple(notebook.skip_compare) + NOT_COMPARED


def pytest_runtest_setup(item):
    cell = getattr(item, "cell", None)
    if cell is not None and "gpu" in cell.get("metadata", {}).get("tags", []) and not torch.cuda.is_available():
        pytest.skip("cell tagged gpu: no CUDA device here")


@pytest.fixture(scope="session")
def pipe():
    """The embedded miniature, loaded once (fp32, CPU)."""
    from kontext_teach import load_pipeline

    return load_pipeline(device="cpu")


@pytest.fixture
def ctrl_c_interrupts():
    """Python's own Ctrl-C handler for the test, whatever the shell gave pytest (a background job, `nohup`,
    ignores SIGINT), and the one before afterwards."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train faster on one thread than on several (and do not fight other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

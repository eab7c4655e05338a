"""setup() and compare(): the two calls every notebook makes."""

import socket

import pytest
import torch

import kontext_teach as kt
from kontext_teach.lab.harness import NetworkDisabledError, diff_bucket


def test_compare_prints_one_line_and_returns_nothing(capsys):
    a = torch.arange(6.0).reshape(2, 3)
    assert kt.compare("same", a, a.clone()) is None
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "exact True" in line and "(2, 3)" in line and "max|diff| 0" in line


def test_compare_accepts_small_differences_and_says_so(capsys):
    a = torch.ones(4)
    kt.compare("close", a, a + 1e-7)
    out = capsys.readouterr().out
    assert "exact False" in out and "allclose True" in out and "<1e-06" in out


def test_compare_raises_on_mismatch():
    with pytest.raises(AssertionError, match="differs from the library"):
        kt.compare("wrong", torch.zeros(3), torch.ones(3))


def test_compare_raises_on_shape_mismatch():
    with pytest.raises(AssertionError, match="shape"):
        kt.compare("shape", torch.zeros(3), torch.zeros(1, 3))


@pytest.mark.parametrize("diff, text", [(0.0, "0"), (3e-7, "<1e-06"), (0.5, "<1e+00"), (2.0, "<1e+01")])
def test_diff_bucket(diff, text):
    assert diff_bucket(diff) == text


def test_setup_prints_versions_seeds_and_returns_the_device(capsys):
    device = kt.setup(seed=3)
    first = torch.rand(2)
    kt.setup(seed=3)
    assert torch.equal(first, torch.rand(2))
    out = capsys.readouterr().out
    for name in ("python", "torch", "diffusers", "transformers", "kontext_teach", "device"):
        assert name in out
    assert device in ("cpu", "cuda")


def test_network_is_blocked_during_tests():
    with pytest.raises(NetworkDisabledError):
        socket.create_connection(("192.0.2.1", 443), timeout=1)


def test_cudnn_attention_is_switched_off_on_cuda_only():
    from kontext_teach.lab.harness import avoid_failing_attention_backends
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        avoid_failing_attention_backends("cpu")
        assert torch.backends.cuda.cudnn_sdp_enabled()
        avoid_failing_attention_backends(torch.device("cuda"))  # only sets a flag: no GPU needed
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)

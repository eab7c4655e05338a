"""The auxiliary grounding loss: what the probe reads, what it leaves out, and that training with it learns."""

import pytest
import torch
import torch.nn.functional as F

from kontext_teach.toy import mini_training as mt
from kontext_teach.toy import toy_world as tw
from kontext_teach.toy.edit_metric import TEXT_LENGTH
from kontext_teach.toy.grounding import GroundingProbe
from test_mini_training import _forward, tiny_transformer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_data(pipe):
    """16 training pairs of the two binding families, encoded with the shipped VAE and text encoders."""
    pairs = tw.make_pairs("train", 16, families=("recolour_one", "remove"))
    return mt.prepare_data(pipe, pipe.vae, pairs, TEXT_LENGTH, torch.device("cpu"))


def test_the_probe_reads_the_context_tokens_that_reach_norm_out(tiny_data):
    transformer = tiny_transformer()
    seen = {}
    handle = transformer.norm_out.register_forward_pre_hook(lambda module, args: seen.update(hidden=args[0]))
    probe = GroundingProbe(transformer).attach()
    with torch.no_grad():
        _forward(transformer, tiny_data)
    handle.remove()
    logits = probe.logits(16)  # [3, 16]: 16 context tokens after 16 target tokens
    assert logits.shape == (3, 16)
    assert torch.allclose(logits, probe.head(seen["hidden"][:, 16:]).squeeze(-1))
    assert [name for name, _ in probe.named_parameters()] == ["head.weight", "head.bias"]  # not the transformer's


def test_detaching_leaves_a_plain_transformer(tiny_data):
    transformer = tiny_transformer()
    with torch.no_grad():
        before = _forward(transformer, tiny_data)
    probe = GroundingProbe(transformer).attach()
    probe.detach()
    assert not transformer.norm_out._forward_pre_hooks
    with torch.no_grad():
        assert torch.equal(_forward(transformer, tiny_data), before)
    with pytest.raises(RuntimeError, match="attach"):
        probe.logits(16)


def test_the_loss_is_bce_on_the_changed_tokens_and_skips_dropped_prompts(tiny_data):
    transformer = tiny_transformer()
    probe = GroundingProbe(transformer).attach()
    _forward(transformer, tiny_data)
    changed = tiny_data.changed[:3]  # [3, 16]
    assert changed.any() and not changed.all()  # both classes occur: the loss can tell right from wrong
    logits = probe.logits(16)
    per_sample = F.binary_cross_entropy_with_logits(logits, changed.float(), reduction="none").mean(dim=1)
    assert probe.loss(changed).item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    keep = torch.tensor([True, False, True])
    assert probe.loss(changed, keep).item() == pytest.approx(per_sample[[0, 2]].mean().item(), rel=1e-6)
    assert probe.loss(changed, torch.zeros(3, dtype=torch.bool)).item() == 0.0
    probe.loss(changed).backward()
    trunk = transformer.single_transformer_blocks[0].proj_out.weight.grad
    assert trunk is not None and trunk.abs().sum() > 0  # the grounding gradient reaches the transformer


def test_training_with_grounding_learns_it_and_saves_no_hook(tiny_data):
    transformer = tiny_transformer()
    probe_losses = []

    class Recording(GroundingProbe):
        def loss(self, changed, keep=None):
            value = super().loss(changed, keep)
            probe_losses.append(value.item())
            return value

    original, mt.GroundingProbe = mt.GroundingProbe, Recording
    try:
        ema, history = mt.train_transformer(transformer, tiny_data, device=torch.device("cpu"), seed=3, batch_size=8,
                                            lr=3e-3, warmup=5, steps=60, grounding_weight=1.0,
                                            log=lambda _: None, show=False)
    finally:
        mt.GroundingProbe = original
    assert len(probe_losses) == 60
    assert sum(probe_losses[-10:]) < 0.7 * sum(probe_losses[:10])  # it learns where the edit happens
    assert not transformer.norm_out._forward_pre_hooks and not ema.norm_out._forward_pre_hooks


def test_the_cli_passes_the_grounding_weight():
    assert mt.parse_args(["--out", "x"]).grounding_weight == 0.0
    assert mt.parse_args(["--out", "x", "--grounding-weight", "0.5"]).grounding_weight == 0.5

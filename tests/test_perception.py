"""The auxiliary perception loss: the true kind shares, what the head reads, and that training with it learns."""

import pytest
import torch

from kontext_teach.position_ids import token_grid
from kontext_teach.toy import mini_training as mt
from kontext_teach.toy import toy_world as tw
from kontext_teach.toy.edit_metric import TEXT_LENGTH
from kontext_teach.toy.perception import CLASSES, KindProbe, kind_shares
from test_mini_training import _forward, tiny_transformer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_data(pipe):
    """16 training pairs of the two binding families, encoded with the shipped VAE and text encoders."""
    pairs = tw.make_pairs("train", 16, families=("recolour_one", "remove"))
    return mt.prepare_data(pipe, pipe.vae, pairs, TEXT_LENGTH, torch.device("cpu"))


def test_kind_shares_add_up_and_put_each_shape_where_it_is():
    scene = tw.Scene(64, (tw.Shape("square", "red", 8.0, 8.0, 6.0), tw.Shape("circle", "blue", 40.0, 40.0, 6.0)))
    shares = kind_shares(scene, token_grid(64, 64))  # [16, 4]: 4 x 4 tokens of 16 x 16 pixels
    assert shares.shape == (16, len(CLASSES))
    assert torch.allclose(shares.sum(dim=1), torch.ones(16))
    half = 0.85 * 6.0
    assert shares[0, CLASSES.index("square")].item() == pytest.approx((2 * half) ** 2 / 256, rel=0.05)  # 4 x 4 supersampled
    assert shares[10, CLASSES.index("circle")].item() == pytest.approx(3.14159 * 36 / 256, rel=0.05)  # row 2, col 2
    assert shares[:, CLASSES.index("triangle")].sum() == 0
    assert shares[5, 0] == 1.0  # a token far from both shapes is all background


@pytest.mark.parametrize("size", [64, 128])
def test_kind_shares_follow_the_token_grid(size):
    pair = tw.make_pairs("train", 1, families=("recolour_one",), size=size)[0]
    grid = token_grid(size, size)
    shares = kind_shares(pair.source_scene, grid)
    assert shares.shape == (grid[0] * grid[1], 4)
    present = {CLASSES[i] for i in range(1, 4) if shares[:, i].sum() > 0}
    assert present == {shape.kind for shape in pair.source_scene.shapes}


def test_prepare_data_stores_the_source_kind_shares(tiny_data):
    assert tiny_data.kind_shares.shape == (16, 16, 4)
    pairs = tw.make_pairs("train", 16, families=("recolour_one", "remove"))
    assert torch.equal(tiny_data.kind_shares[3], kind_shares(pairs[3].source_scene, tiny_data.grid))


@pytest.mark.parametrize("block, path", [(0, "transformer_blocks.0"), (-1, "single_transformer_blocks.0")])
def test_the_probe_reads_the_context_tokens_of_its_block(tiny_data, block, path):
    transformer = tiny_transformer()
    seen = {}
    module = transformer.get_submodule(path)
    handle = module.register_forward_hook(lambda m, args, output: seen.update(image=output[1]))
    probe = KindProbe(transformer, block).attach()
    with torch.no_grad():
        _forward(transformer, tiny_data)
    handle.remove()
    logits = probe.logits(16)  # [3, 16, 4]: the 16 context tokens come after the 16 target tokens
    assert logits.shape == (3, 16, 4)
    assert torch.allclose(logits, probe.head(seen["image"][:, 16:]))
    assert [name for name, _ in probe.named_parameters()] == ["head.weight", "head.bias"]  # not the transformer's


def test_a_block_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="2 blocks"):
        KindProbe(tiny_transformer(), 2)


def test_the_loss_is_the_soft_cross_entropy_and_reaches_the_trunk(tiny_data):
    transformer = tiny_transformer()
    probe = KindProbe(transformer, 0).attach()
    _forward(transformer, tiny_data)
    shares = tiny_data.kind_shares[:3]
    expected = -(shares * torch.log_softmax(probe.logits(16), dim=-1)).sum(-1).mean()
    assert probe.loss(shares).item() == pytest.approx(expected.item(), rel=1e-6)
    probe.loss(shares).backward()
    first = transformer.transformer_blocks[0].attn.to_q.weight.grad
    assert first is not None and first.abs().sum() > 0
    assert transformer.single_transformer_blocks[0].proj_out.weight.grad is None  # after the probed block: untouched
    probe.detach()
    assert not transformer.transformer_blocks[0]._forward_hooks
    with pytest.raises(RuntimeError, match="attach"):
        probe.logits(16)


def test_training_with_perception_learns_it_and_saves_no_hook(tiny_data):
    transformer = tiny_transformer()
    losses = []

    class Recording(KindProbe):
        def loss(self, shares):
            value = super().loss(shares)
            losses.append(value.item())
            return value

    original, mt.KindProbe = mt.KindProbe, Recording
    try:
        ema, _ = mt.train_transformer(transformer, tiny_data, device=torch.device("cpu"), seed=3, batch_size=8,
                                      lr=3e-3, warmup=5, steps=60, perception_weight=1.0, perception_block=0,
                                      log=lambda _: None, show=False)
    finally:
        mt.KindProbe = original
    assert len(losses) == 60
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])  # it learns what is under each token
    for model in (transformer, ema):
        assert not any(block._forward_hooks for block in model.transformer_blocks)


def test_the_cli_passes_the_perception_weight_and_block():
    defaults = mt.parse_args(["--out", "x"])
    assert (defaults.perception_weight, defaults.perception_block) == (0.0, 1)
    args = mt.parse_args(["--out", "x", "--perception-weight", "0.5", "--perception-block", "3"])
    assert (args.perception_weight, args.perception_block) == (0.5, 3)


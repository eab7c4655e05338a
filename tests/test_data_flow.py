"""The shapes at every arrow of an edit, computed by running it."""

import pytest

from kontext_teach.anatomy import data_flow, full_size


def shapes(arrows):
    return {a.name: a.shape for a in arrows}


def test_full_size_edit_at_1024_has_the_documented_shapes(pipe):
    components = {**full_size.meta_components(), "tokenizer": pipe.tokenizer, "tokenizer_2": pipe.tokenizer_2}
    s = shapes(data_flow.trace_edit(components, height=1024, width=1024, device="meta"))
    assert s["pooled CLIP"] == (1, 768)
    assert s["T5 states"] == (1, 512, 4096)
    assert s["text ids"] == (512, 3)
    assert s["VAE latent (mode)"] == (1, 16, 128, 128)
    assert s["context tokens"] == s["noise tokens"] == (1, 4096, 64)
    assert s["transformer input"] == (1, 8192, 64) and s["image ids"] == (8192, 3)
    assert s["velocity (target)"] == (1, 4096, 64)
    assert s["edited image"] == (1, 3, 1024, 1024)


@pytest.mark.parametrize("batch, height, width, image_height, image_width",
                         [(1, 64, 64, None, None), (2, 48, 80, 64, 32)])
def test_miniature_edit_shapes(pipe, batch, height, width, image_height, image_width):
    s = shapes(data_flow.trace_edit(pipe.components, height=height, width=width, image_height=image_height,
                                    image_width=image_width, batch_size=batch, num_steps=4))
    target = (height // 16) * (width // 16)
    context = ((image_height or height) // 16) * ((image_width or width) // 16)
    assert s["noise tokens"] == (batch, target, 64)
    assert s["context tokens"] == (batch, context, 64)
    assert s["transformer output"] == (batch, target + context, 64)
    assert s["velocity (target)"] == (batch, target, 64)
    assert s["edited image"] == (batch, 3, height, width)
    assert s["sigmas"] == (5,)

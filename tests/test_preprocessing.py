"""Image preprocessing: sizes predicted by plan_sizes and tensors built from scratch, checked
against FluxKontextPipeline (what reaches its VAE and transformer) and its VaeImageProcessor."""

import numpy as np
import pytest
import torch
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS as DIFFUSERS_RESOLUTIONS
from PIL import Image

from kontext_teach import preprocessing as pp
from kontext_teach.preprocessing import Size


def noise_image(width, height, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def pipeline_kwargs(height=None, width=None, max_area=1024**2, auto_resize=True):
    kwargs = {"max_area": max_area, "_auto_resize": auto_resize}
    kwargs.update({k: v for k, v in (("height", height), ("width", width)) if v is not None})
    return kwargs


# --- the 17 preferred resolutions -------------------------------------------------------------

def test_own_copy_of_the_resolutions_equals_diffusers():
    assert list(pp.PREFERRED_KONTEXT_RESOLUTIONS) == [tuple(r) for r in DIFFUSERS_RESOLUTIONS]
    assert len(pp.PREFERRED_KONTEXT_RESOLUTIONS) == 17


def test_preferred_resolutions_are_multiples_of_16_near_one_megapixel_and_mirrored():
    for width, height in pp.PREFERRED_KONTEXT_RESOLUTIONS:
        assert width % 16 == 0 and height % 16 == 0
        assert abs(width * height / 1024**2 - 1) < 0.015
    assert list(pp.PREFERRED_KONTEXT_RESOLUTIONS) == [(h, w) for w, h in reversed(pp.PREFERRED_KONTEXT_RESOLUTIONS)]
    ratios = [w / h for w, h in pp.PREFERRED_KONTEXT_RESOLUTIONS]
    assert ratios == sorted(ratios)


@pytest.mark.parametrize("resolution", pp.PREFERRED_KONTEXT_RESOLUTIONS, ids=str)
def test_a_preferred_resolution_snaps_to_itself_and_is_not_resized(resolution):
    assert pp.snap_to_preferred(Size(*resolution)) == resolution
    plan = pp.plan_sizes(resolution)
    assert plan.condition == resolution and plan.stretch == 1.0


@pytest.mark.parametrize("resolution", pp.PREFERRED_KONTEXT_RESOLUTIONS, ids=str)
def test_output_for_a_preferred_resolution_matches_the_pipeline(pipe, resolution):
    """Passing a preferred resolution as height/width does not give it back (issue #11942)."""
    width, height = resolution
    observed = pp.observe_pipeline_sizes(pipe, noise_image(32, 32), height=height, width=width, _auto_resize=False)
    assert observed.output == pp.output_size(height, width)
    exact = pp.output_size(height, width, max_area=width * height)
    assert exact == resolution


def test_the_aspect_ratio_is_taken_after_flooring():
    assert pp.snap_to_preferred(Size(250, 310)) == (944, 1104)
    assert pp.condition_size((250, 310)) == (880, 1184)  # 240x304 after flooring


def test_snapping_picks_the_closest_aspect_ratio():
    ratios = np.exp(np.linspace(np.log(0.2), np.log(5), 400))
    for ratio in ratios:
        size = Size(int(round(1000 * ratio)), 1000)
        chosen = pp.snap_to_preferred(size)
        best = min(abs(size.aspect - w / h) for w, h in pp.PREFERRED_KONTEXT_RESOLUTIONS)
        assert abs(size.aspect - chosen.aspect) == best


# --- sizes predicted versus sizes the pipeline used ---------------------------------------------

CASES = [  # (image width, image height), pipeline arguments
    ((64, 48), pipeline_kwargs()),
    ((832, 1216), pipeline_kwargs()),  # issue #11886: the output is square
    ((640, 360), pipeline_kwargs(height=360, width=640)),  # asked for 640x360, got ~1 MP
    ((900, 300), pipeline_kwargs(max_area=768**2)),  # issue #12406: smaller, but square
    ((1000, 1015), pipeline_kwargs(height=1568, width=672)),  # floored image aspect, tall output
    ((100, 50), pipeline_kwargs(height=48, width=64, max_area=48 * 64, auto_resize=False)),
    ((200, 120), pipeline_kwargs(height=80, width=128, max_area=80 * 128, auto_resize=False)),
    ((47, 95), pipeline_kwargs(width=96, max_area=96 * 48, auto_resize=False)),  # height defaults to 1024
    ((1023, 1025), pipeline_kwargs(height=700, width=1000, max_area=500_000)),
    ((250, 310), pipeline_kwargs()),  # the aspect is taken after flooring: 880x1184, not 944x1104
    ((40, 70), pipeline_kwargs(max_area=512**2)),  # 32x64 after flooring: 720x1456, not 800x1328
]


@pytest.mark.parametrize("image_size, kwargs", CASES, ids=[f"{s[0]}x{s[1]}-{i}" for i, (s, _) in enumerate(CASES)])
def test_plan_sizes_and_condition_tensor_match_the_pipeline(pipe, image_size, kwargs):
    image = noise_image(*image_size, seed=sum(image_size))
    plan = pp.plan_sizes(image_size, height=kwargs.get("height"), width=kwargs.get("width"),
                         max_area=kwargs["max_area"], auto_resize=kwargs["_auto_resize"])
    observed = pp.observe_pipeline_sizes(pipe, image, **kwargs)
    assert (observed.condition, observed.output) == (plan.condition, plan.output)
    ours = pp.preprocess_condition_image(image, auto_resize=kwargs["_auto_resize"])  # [1, 3, H, W]
    torch.testing.assert_close(ours, observed.condition_tensor, atol=1e-6, rtol=0)


def test_observing_without_skipping_the_vae_reads_the_context_grid(pipe):
    observed = pp.observe_pipeline_sizes(pipe, noise_image(100, 50), skip_vae_encode=False,
                                         **pipeline_kwargs(height=48, width=64, max_area=48 * 64, auto_resize=False))
    assert (observed.condition, observed.output) == ((96, 48), (64, 48))


def test_observing_needs_an_image(pipe):
    with pytest.raises(ValueError, match="needs an image"):
        pp.observe_pipeline_sizes(pipe, None)


@pytest.mark.parametrize("batch", [2, 3])
def test_batched_condition_images_match_the_pipeline(pipe, batch):
    images = [noise_image(90, 60, seed=i) for i in range(batch)]
    kwargs = pipeline_kwargs(height=32, width=48, max_area=32 * 48, auto_resize=False)
    observed = pp.observe_pipeline_sizes(pipe, images, prompt=["p"] * batch, **kwargs)
    ours = pp.preprocess_condition_image(images, auto_resize=False)
    assert ours.shape == (batch, 3, 48, 80)
    torch.testing.assert_close(ours, observed.condition_tensor, atol=1e-6, rtol=0)


@pytest.mark.parametrize("height, width", [(48, 64), (32, 80), (64, 32)])
def test_decoded_output_image_has_the_predicted_size(pipe, height, width):
    kwargs = pipeline_kwargs(height=height, width=width, max_area=height * width, auto_resize=False)
    image = pipe(image=noise_image(40, 72), prompt="p", num_inference_steps=1, **kwargs).images[0]
    assert image.size == pp.plan_sizes((40, 72), height=height, width=width, max_area=height * width,
                                       auto_resize=False).output == (width, height)


# --- the tensor, rebuilt from scratch --------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("image_size", [(64, 48), (37, 91), (500, 200), (1024, 1024)])
def test_preprocessing_matches_vae_image_processor(pipe, batch, image_size):
    images = [noise_image(*image_size, seed=i) for i in range(batch)]
    size = pp.condition_size(image_size)
    processor = pipe.image_processor
    theirs = processor.preprocess([processor.resize(i, size.height, size.width) for i in images],
                                  size.height, size.width)
    ours = pp.preprocess_condition_image(images)
    assert ours.shape == (batch, 3, size.height, size.width) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert ours.min() >= -1 and ours.max() <= 1


def test_resize_is_a_stretch_not_a_crop():
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 100))  # a red stripe at the left edge
    tensor = pp.preprocess_condition_image(image)  # 3:1 -> 1568x672 (2.33:1)
    assert tensor.shape == (1, 3, 672, 1568)
    assert tensor[0, 0, :, :20].mean() > 0.9  # the stripe survives: nothing was cropped


# --- sizes: explicit rounding, clear errors --------------------------------------------------

def test_fit_to_multiple_policies():
    assert pp.fit_to_multiple(1024, 768) == (1024, 768)
    assert pp.fit_to_multiple(1000, 750, rounding="floor") == (992, 736)
    assert pp.fit_to_multiple(1000, 750, rounding="nearest") == (1008, 752)
    assert pp.fit_to_multiple(20, 23, rounding="nearest") == (16, 16)
    with pytest.raises(ValueError, match=r"1000x750 is not a multiple of 16.*992x736.*1008x752.*1168x880"):
        pp.fit_to_multiple(1000, 750)
    with pytest.raises(ValueError, match="at least 16 px"):
        pp.fit_to_multiple(8, 64, rounding="floor")
    with pytest.raises(ValueError, match="rounding must be one of"):
        pp.fit_to_multiple(64, 64, rounding="ceil")


@pytest.mark.parametrize("height, width, max_area, pipeline_output", [
    (750, 1000, None, (1168, 880)), (1000, 600, None, (784, 1312)), (1568, 672, None, (656, 1552)),
    (1216, 832, None, (832, 1232)), (750, 1000, 750 * 1000, (992, 736))])
def test_the_pipeline_rescales_to_max_area_before_flooring(pipe, height, width, max_area, pipeline_output):
    """What fit_to_multiple's message and notebooks 01, 04 and 06 say, against the pipeline itself."""
    kwargs = dict(height=height, width=width) | ({} if max_area is None else dict(max_area=max_area))
    observed = pp.observe_pipeline_sizes(pipe, noise_image(32, 32), _auto_resize=False, **kwargs)
    assert observed.output == pipeline_output == pp.output_size(**kwargs)
    if max_area is None and (width % 16 or height % 16):  # the error message names the pipeline's real size
        with pytest.raises(ValueError, match=f"{Size(*pipeline_output)} with the default"):
            pp.fit_to_multiple(width, height)


def test_only_a_small_height_divides_by_zero_in_the_pipeline(pipe):
    """A condition image 12 px wide runs (snapped to the tallest bucket); 12 px high raises ZeroDivisionError."""
    assert pp.observe_pipeline_sizes(pipe, noise_image(12, 400)).condition == (672, 1568)
    with pytest.raises(ZeroDivisionError):
        pp.observe_pipeline_sizes(pipe, noise_image(400, 12))
    for image_size in ((12, 400), (400, 12)):  # both are refused here, with the reason
        with pytest.raises(ValueError, match="a height of 0 then divides by zero"):
            pp.plan_sizes(image_size)


@pytest.mark.parametrize("call, message", [
    (lambda: pp.plan_sizes((15, 300)), "at least 16 px"),
    (lambda: pp.plan_sizes((300,)), r"\(width, height\)"),
    (lambda: pp.plan_sizes((64, 64), height=0), "height must be at least 1 px"),
    (lambda: pp.plan_sizes((64, 64), width=512.0), "whole number of pixels"),
    (lambda: pp.plan_sizes((64, 64), max_area=100), "raise max_area"),
    (lambda: pp.plan_sizes((64, 64), height=16, width=4096, max_area=64 * 64), "output side under 16 px"),
])
def test_bad_sizes_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_plan_notes_name_the_surprises():
    default = pp.plan_sizes((832, 1216))
    assert default.output == (1024, 1024) and default.requested == (1024, 1024)
    assert any("does not follow" in note for note in default.notes())
    asked = pp.plan_sizes((640, 360), height=360, width=640)
    assert asked.output == (1360, 768) and any("requested 640x360 became 1360x768" in n for n in asked.notes())
    assert pp.plan_sizes((1024, 1024)).notes() == []
    assert "4096 tokens" in pp.plan_sizes((1024, 1024)).describe()


def test_size_helpers():
    size = Size(1248, 832)
    assert (size.aspect, size.area, size.tokens(), str(size)) == (1.5, 1248 * 832, 78 * 52, "1248x832")
    assert pp.plan_sizes((3000, 1000)).stretch == pytest.approx((1568 / 672) / 3)
    assert pp.condition_size((4000, 3000), auto_resize=False).tokens() == 250 * 187


# --- image modes -----------------------------------------------------------------------------

def test_rgba_is_composited_over_the_background():
    image = Image.new("RGBA", (2, 1))
    image.putpixel((0, 0), (10, 20, 30, 0))  # fully transparent: its stored colour must not show
    image.putpixel((1, 0), (200, 0, 0, 128))  # half transparent: blended
    white, black = pp.to_rgb(image), pp.to_rgb(image, background=(0, 0, 0))
    assert white.mode == "RGB" and white.getpixel((0, 0)) == (255, 255, 255)
    assert black.getpixel((0, 0)) == (0, 0, 0)
    assert all(abs(a - b) <= 1 for a, b in zip(white.getpixel((1, 0)), (227, 127, 127)))
    assert image.convert("RGB").getpixel((0, 0)) == (10, 20, 30)  # what PIL's convert("RGB") shows instead


@pytest.mark.parametrize("mode", ["LA", "PA", "RGBa"])
def test_other_alpha_modes_are_composited(mode):
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0)).convert(mode)
    assert pp.has_alpha(image)
    assert pp.to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_a_transparent_index_is_composited():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    assert pp.to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", pp.PIL_CONVERTED_MODES)
def test_modes_without_alpha_use_pil_conversion(mode):
    image = noise_image(8, 6, mode=mode)
    assert pp.to_rgb(image).tobytes() == image.convert("RGB").tobytes()


def test_grayscale_becomes_three_equal_channels():
    rgb = np.asarray(pp.to_rgb(noise_image(8, 6, mode="L")))
    assert rgb.shape == (6, 8, 3) and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(mode):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    byte_order = ">u2" if mode.endswith("B") else "<u2"
    image = Image.frombytes(mode, (3, 1), values.astype(byte_order).tobytes())
    assert image.mode == mode
    assert [p[0] for p in pp.to_rgb(image).getdata()] == [0, 100, 255]
    assert image.convert("L").getpixel((1, 0)) == 255  # PIL alone clips


@pytest.mark.parametrize("mode", ["I", "F"])
def test_ambiguous_modes_are_refused(mode):
    with pytest.raises(ValueError, match=f"mode '{mode}' is not supported"):
        pp.to_rgb(noise_image(4, 4, mode=mode))


def test_non_images_are_refused():
    with pytest.raises(ValueError, match="Image.fromarray"):
        pp.to_rgb(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="no images given"):
        pp.preprocess_condition_image([])


def test_the_pipeline_itself_fails_on_rgba_and_our_rgb_matches_it(pipe):
    rgba = noise_image(64, 48).convert("RGBA")
    kwargs = pipeline_kwargs(height=48, width=64, max_area=48 * 64, auto_resize=False)
    with pytest.raises(RuntimeError, match="to have 3 channels, but got 4"):
        pipe(image=rgba, prompt="p", num_inference_steps=1, output_type="latent", **kwargs)
    with pytest.raises(RuntimeError, match="to have 3 channels, but got 4"):  # the observer fails alike
        pp.observe_pipeline_sizes(pipe, rgba, **kwargs)
    observed = pp.observe_pipeline_sizes(pipe, pp.to_rgb(rgba), **kwargs)
    torch.testing.assert_close(pp.preprocess_condition_image(rgba, auto_resize=False), observed.condition_tensor,
                               atol=1e-6, rtol=0)


def test_drawings_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert len(pp.draw_preferred_resolutions().patches) == 17
    assert len(pp.draw_plan(pp.plan_sizes((640, 360))).patches) == 3
    plt.close("all")

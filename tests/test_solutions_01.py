"""Solutions of notebook 01_image_preprocessing, checked by prediction and against the pipeline."""

import numpy as np
import pytest
from PIL import Image

from kontext_teach import preprocessing as pp
from kontext_teach.solutions import s01_image_preprocessing as s01


def noise_image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("width, height", [(1024, 1024), (1248, 832), (672, 1568), (512, 768), (64, 48), (2048, 16)])
def test_kwargs_for_output_size_give_that_size(width, height):
    kwargs = s01.kwargs_for_output_size(width, height)
    assert pp.plan_sizes((64, 64), **kwargs).output == (width, height)


def test_kwargs_for_output_size_refuse_sizes_that_are_not_multiples_of_16():
    with pytest.raises(ValueError, match="not a multiple of 16"):
        s01.kwargs_for_output_size(1000, 750)


@pytest.mark.parametrize("width, height", [(64, 48), (48, 80)])
def test_kwargs_for_output_size_in_the_pipeline(pipe, width, height):
    kwargs = s01.kwargs_for_output_size(width, height)
    observed = pp.observe_pipeline_sizes(pipe, noise_image(32, 32), _auto_resize=False, **kwargs)
    assert observed.output == (width, height)


@pytest.mark.parametrize("image_size", [(832, 1216), (640, 360), (3000, 1000), (1000, 1015), (17, 33)])
@pytest.mark.parametrize("auto_resize", [True, False])
def test_kwargs_matching_condition_make_output_and_condition_equal(image_size, auto_resize):
    kwargs = s01.kwargs_matching_condition(image_size, auto_resize)
    plan = pp.plan_sizes(image_size, height=kwargs["height"], width=kwargs["width"], max_area=kwargs["max_area"],
                         auto_resize=kwargs["_auto_resize"])
    assert plan.output == plan.condition == pp.condition_size(image_size, auto_resize)


def test_kwargs_matching_condition_in_the_pipeline(pipe):
    image = noise_image(90, 50)
    observed = pp.observe_pipeline_sizes(pipe, image, **s01.kwargs_matching_condition(image.size, auto_resize=False))
    assert observed.output == observed.condition == (80, 48)


@pytest.mark.parametrize("image_size", [(300, 100), (100, 300), (640, 360), (500, 500), (1000, 1015)])
def test_crop_to_preferred_gives_a_preferred_size_without_stretch(image_size):
    cropped = s01.crop_to_preferred(noise_image(*image_size))
    assert cropped.size in pp.PREFERRED_KONTEXT_RESOLUTIONS
    box = s01.centre_crop_box(image_size, pp.Size(*cropped.size))
    kept = pp.Size(box[2] - box[0], box[3] - box[1])
    assert kept.aspect == pytest.approx(cropped.size[0] / cropped.size[1])
    assert pp.plan_sizes(cropped.size).stretch == 1.0  # the pipeline keeps it as it is


def test_crop_to_preferred_trims_the_margins():
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 100))
    image.paste((255, 0, 0), (280, 0, 300, 100))  # red margins, blue centre
    cropped = np.asarray(s01.crop_to_preferred(image))  # 3:1 -> 1568x672, about 33 px trimmed per side
    assert cropped.shape == (672, 1568, 3)
    assert cropped[..., 0].max() < 40  # no red left


def test_crop_to_preferred_equals_plain_resize_when_the_aspect_already_fits():
    image = noise_image(624, 416)  # 3:2, like 1248x832
    expected = pp.resize_lanczos(image, pp.Size(1248, 832))
    assert s01.crop_to_preferred(image).tobytes() == expected.tobytes()

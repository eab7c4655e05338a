"""Solutions to the exercises of notebook 01_image_preprocessing."""

from PIL import Image

from ..preprocessing import MULTIPLE_OF, Size, condition_size, fit_to_multiple, snap_to_preferred


def kwargs_for_output_size(width: int, height: int, multiple_of: int = MULTIPLE_OF) -> dict:
    """Exercise 1: pipeline arguments that make the output exactly width x height.

    height/width alone only set the aspect ratio; max_area = width * height makes the rescale a
    no-op: sqrt(w * h * (w / h)) = w. Sizes that are not multiples of 16 are refused, not floored.
    """
    width, height = fit_to_multiple(width, height, multiple_of, rounding="error")
    return {"height": height, "width": width, "max_area": width * height}


def kwargs_matching_condition(image_size, auto_resize: bool = True, multiple_of: int = MULTIPLE_OF) -> dict:
    """Exercise 2: arguments that make the output the size of the resized condition image (BFL's default)."""
    condition = condition_size(image_size, auto_resize, multiple_of)
    return {**kwargs_for_output_size(*condition, multiple_of), "_auto_resize": auto_resize}


def centre_crop_box(image_size, target: Size) -> tuple[float, float, float, float]:
    """The largest centred (left, top, right, bottom) box of image_size with target's aspect ratio."""
    width, height = image_size
    if width / height > target.aspect:  # too wide: trim left and right
        kept = height * target.aspect
        return ((width - kept) / 2, 0.0, (width + kept) / 2, float(height))
    kept = width / target.aspect  # too tall: trim top and bottom
    return (0.0, (height - kept) / 2, float(width), (height + kept) / 2)


def crop_to_preferred(image: Image.Image) -> Image.Image:
    """Exercise 3: centre-crop to the preferred aspect ratio, then LANCZOS-resize: no stretch.

    The pipeline then keeps the size as it is (it is already a preferred resolution), so the
    model sees undistorted content, at the price of the cropped margins.
    """
    floored = Size(*(side // MULTIPLE_OF * MULTIPLE_OF for side in image.size))
    target = snap_to_preferred(floored)
    box = centre_crop_box(image.size, target)
    return image.resize(tuple(target), resample=Image.Resampling.LANCZOS, box=box)

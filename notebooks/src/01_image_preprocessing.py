# %% [markdown]
# # 01 · Image preprocessing: the size Kontext sees, and the size it returns
#
# Before any network runs, `FluxKontextPipeline` makes two decisions about sizes: how to resize
# your picture (the *condition image*) into the tensor its VAE encodes, and how large the picture
# it generates (the *output*) will be. The two decisions are independent, and both surprise people.
# This notebook rebuilds them from scratch, predicts them for any input, and checks every
# prediction against the pipeline itself. In the series this is the first box of the data flow of
# `00_overview`: image → **preprocess** → VAE → pack → transformer.
#
# ## What you will learn
# - the 17 preferred resolutions of Kontext, and how an image is snapped to one of them by its
#   aspect ratio: a stretch with LANCZOS, never a crop;
# - why every side is a multiple of 16 (8 for the VAE × 2 for the 2×2 packing), and how to round
#   explicitly instead of being floored silently;
# - why the output is 1024×1024 unless you say otherwise, and which three arguments decide it;
# - to predict the condition size and the output size for any input and arguments (`plan_sizes`),
#   checked against what the pipeline really did;
# - to build the condition tensor yourself (RGB policy → LANCZOS → [-1, 1] → `[B, 3, H, W]`), equal
#   to diffusers' to the last bit, and to handle RGBA, grayscale, palette, CMYK and 16-bit images.
#
# ## Prerequisites
# - `00_overview` (the whole edit as one pipeline call);
# - PIL basics: `image.size` is **(width, height)**, while tensors are `[B, C, H, W]`. This notebook
#   writes sizes as *width×height*, like PIL and diffusers' resolution list.

# %%
import kontext_teach as kt

device = kt.setup()

# %%
import html

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS
from PIL import Image, ImageDraw

from kontext_teach import preprocessing as pp
from kontext_teach.lab.harness import figure_png
from kontext_teach.preprocessing import Size

pipe = kt.load_pipeline(device="cpu")  # the embedded miniature: same preprocessing code as the real model
print(type(pipe).__name__, "| image processor:", type(pipe.image_processor).__name__,
      "| vae_scale_factor", pipe.vae_scale_factor, "| resample", pipe.image_processor.config.resample,
      "| do_convert_rgb", pipe.image_processor.config.do_convert_rgb)

# %% [markdown]
# ## Theory
#
# **Two paths, no link between them.** In `FluxKontextPipeline.__call__` the condition image and the
# output size are computed separately:
#
# ```
# condition:  image (w, h) → floor sides to 16 → r = w / h → closest preferred (w*, h*) by |r − w*/h*|
#             (with _auto_resize=False: keep the floored size, however large)
#             → LANCZOS resize to w*×h* (no crop) → x / 255 · 2 − 1 → [B, 3, h*, w*] → VAE
# output:     height, width (default 1024, 1024) → r = width / height
#             → W = round(√(max_area · r)),  H = round(√(max_area / r)) → floor to 16 → noise [B, 16, H/8, W/8]
# ```
#
# **Why 16.** The VAE downsamples by 8 (three stride-2 stages: `vae_scale_factor = 2 ** (4 − 1)`),
# and the transformer packs each 2×2 patch of latent pixels into one token (notebook 04). So one
# token covers 16×16 pixels and every side must be a multiple of 16. A 1024×1024 image becomes a
# 128×128 latent and 64×64 = 4096 tokens.
#
# **Why about one megapixel.** Kontext was trained on a set of resolution buckets of about
# 1024² pixels; diffusers and BFL's reference code both say "Kontext is trained on specific
# resolutions, using one of them is recommended" and snap every condition image to the bucket with
# the closest aspect ratio (`_auto_resize=True`, the default).
#
# **Why the output is 1024² unless you say otherwise.** `height` and `width` default to 1024 and only
# give an aspect ratio: the area is always rescaled to `max_area` (default 1024²). The condition
# image is never consulted. BFL's reference sampler (`prepare_kontext` in `src/flux/sampling.py`)
# behaves differently: its default target size is the size of the resized condition image.
#
# Common misreadings, each the subject of a diffusers issue:
# - *"The output follows my input image."* Not in diffusers: an 832×1216 portrait gives a 1024×1024
#   output (issue #11886). The model then composes a square picture, which looks like a crop but is not.
# - *"height/width set the output size."* They set its shape; the area comes from `max_area`. Passing
#   the preferred 672×1568 (`height=1568, width=672`) gives 656×1552 (issue #11942): the area is first
#   rescaled to `max_area`, W = round(√(1024² · 672/1568)) = 670, and flooring to 16 then makes it 656.
#   The rescale moves sizes under 1024² too: 832×1216 comes back as 832×1232 (section 4). Lowering
#   `max_area` to 768² with the default height/width gives a *square* 768×768 (issue #12406).
# - *"The pipeline crops to the preferred resolution."* It stretches: the aspect ratio changes by up to
#   about 8% inside the range of the list, much more for panoramas, and nothing is cut off.
# - *"Any size divisible by 16 works."* The pipeline keeps a condition image at such a size only with
#   `_auto_resize=False`, and an output only with `max_area=height*width`; and the model was trained
#   around 1 MP, so sizes far from it leave the training distribution.

# %% [markdown]
# ## Practice
#
# ### 1. The 17 preferred resolutions
# diffusers exports them as a public module constant, `PREFERRED_KONTEXT_RESOLUTIONS`; our module
# keeps its own copy (so that the series can show and test it) and we check that the two agree.
# Every entry is (width, height), both multiples of 16, mirrored around 1024×1024.

# %%
print(f"{'width':>6} {'height':>6} {'aspect':>7} {'area/1024²':>11} {'tokens':>7}")
for width, height in pp.PREFERRED_KONTEXT_RESOLUTIONS:
    size = Size(width, height)
    print(f"{width:>6} {height:>6} {size.aspect:>7.3f} {size.area / 1024**2:>11.3f} {size.tokens():>7}")
_ = kt.compare("17 preferred resolutions", torch.tensor(pp.PREFERRED_KONTEXT_RESOLUTIONS),
               torch.tensor(PREFERRED_KONTEXT_RESOLUTIONS), atol=0, rtol=0)

# %% [markdown]
# Drawn to scale around one centre, they are one family of shapes of (almost) the same area, from a
# tall 3:7 strip to a wide 7:3 one; all areas lie within 1.5% of 1024².

# %%
RATIO_TICKS = {0.25: "1:4", 0.43: "3:7", 0.67: "2:3", 1: "1:1", 1.5: "3:2", 2.33: "7:3", 4: "4:1"}


def ratio_axis(ax, which="x", ticks=RATIO_TICKS):
    """A log-scaled aspect-ratio axis labelled 3:2, 1:1, ... instead of powers of ten."""
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_ticks(list(ticks), labels=list(ticks.values()))
    axis.set_minor_formatter(plt.NullFormatter())


fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 1.25]})
pp.draw_preferred_resolutions(left)
left.set_title("the 17 preferred resolutions, to scale")
aspects = [w / h for w, h in pp.PREFERRED_KONTEXT_RESOLUTIONS]
areas = [w * h / 1024**2 for w, h in pp.PREFERRED_KONTEXT_RESOLUTIONS]
right.plot(aspects, areas, "o-", color="#4c72b0")
right.axhline(1.0, color="grey", ls="--", lw=1)
ratio_axis(right, "x", {0.43: "3:7", 0.5: "1:2", 0.67: "2:3", 1: "1:1", 1.5: "3:2", 2: "2:1", 2.33: "7:3"})
right.set_ylim(0.95, 1.05)
right.set_xlabel("aspect ratio width / height (log scale)")
right.set_ylabel("area / 1024²")
right.set_title("all about one megapixel")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 2. Snapping by aspect ratio
# The pipeline floors the image's sides to multiples of 16 (`VaeImageProcessor.get_default_height_width`),
# takes r = width / height of *that*, and picks the entry that minimises |r − w/h|; ties go to the smaller
# width, because diffusers takes `min((abs(r - w / h), w, h) ...)` over tuples. Our
# `pp.snap_to_preferred` does exactly that, and `pp.condition_size` adds the flooring. How much the
# picture is stretched is the ratio of the two aspect ratios.

# %%
examples = {"16:9 video": (1920, 1080), "4:3 camera": (1600, 1200), "3:2 DSLR": (1500, 1000),
            "square": (900, 900), "9:16 phone": (1080, 1920), "3:1 panorama": (3000, 1000)}
print(f"{'input':<14} {'size':>10} {'aspect':>7} -> {'condition':>10} {'aspect':>7} {'stretch':>8}")
for name, image_size in examples.items():
    plan = pp.plan_sizes(image_size)
    print(f"{name:<14} {str(plan.image):>10} {plan.image.aspect:>7.3f} -> {str(plan.condition):>10} "
          f"{plan.condition.aspect:>7.3f} {100 * (plan.stretch - 1):>+7.1f}%")
print("\nflooring first matters for small images: 250x310 snaps to", pp.snap_to_preferred(Size(250, 310)),
      "by its own aspect, but the pipeline uses 240x304 and picks", pp.condition_size((250, 310)))

# %% [markdown]
# Between two neighbouring entries the switch happens halfway between their aspect ratios. The entries
# are not evenly spaced: neighbours differ by 7% in aspect ratio at the extremes but by 17% around the
# square, so *near-square* images are distorted most inside the range of the list (3:7 to 7:3).
# Beyond that range the distortion grows without bound: a 3:1 panorama is squeezed by 22%.

# %%
input_aspects = np.exp(np.linspace(np.log(0.25), np.log(4), 800))
chosen = np.array([pp.snap_to_preferred(Size(round(1000 * a), 1000)).aspect for a in input_aspects])
stretch = 100 * (chosen / input_aspects - 1)
lowest, highest = min(aspects), max(aspects)
inside = (input_aspects >= lowest) & (input_aspects <= highest)
worst = np.abs(stretch[inside]).argmax()
print(f"largest distortion inside the list's range: {stretch[inside][worst]:+.1f}% "
      f"(input aspect {input_aspects[inside][worst]:.3f})")
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.plot(input_aspects, input_aspects, color="grey", ls="--", lw=1, label="no change")
left.plot(input_aspects, chosen, color="#4c72b0", label="chosen preferred resolution")
ratio_axis(left, "x")
ratio_axis(left, "y")
left.set_xlabel("input aspect ratio (log)")
left.set_ylabel("condition aspect ratio (log)")
left.set_title("snapping is a staircase")
left.legend(fontsize=8)
right.axvspan(lowest, highest, color="#eeeeee", label="range of the list")
right.plot(input_aspects, stretch, color="#c44e52")
label_offsets = {"16:9 video": (-10, 14), "4:3 camera": (-30, -22), "3:2 DSLR": (-6, 14), "square": (-30, 14),
                 "9:16 phone": (-20, -22), "3:1 panorama": (-40, -22)}
for name, (w, h) in examples.items():
    point = (w / h, 100 * (pp.plan_sizes((w, h)).stretch - 1))
    right.plot(*point, "o", color="black", ms=3.5)
    right.annotate(name, point, fontsize=7.5, xytext=label_offsets[name], textcoords="offset points")
right.axhline(0, color="grey", lw=1)
right.legend(fontsize=8, loc="upper right")
ratio_axis(right, "x")
right.set_xlabel("input aspect ratio (log)")
right.set_ylabel("horizontal stretch (%)")
right.set_title("how much the picture is distorted (no crop)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Check.** `pp.observe_pipeline_sizes` runs the real pipeline with two PyTorch forward hooks: one on
# `pipe.vae.encoder` records the tensor the VAE is about to encode, one on `pipe.transformer` records
# the position ids of the first denoising step (one id per 16×16 patch of the output) and stops the
# run there. It also hands the VAE a 16×16 stand-in once the real input is recorded, so that we do not
# spend seconds encoding megapixel images we never use. Predicted and observed sizes must agree:

# %%
print(f"{'input':<14} {'predicted':>10} {'pipeline':>10}")
for name, (w, h) in examples.items():
    observed = pp.observe_pipeline_sizes(pipe, Image.new("RGB", (w, h), (128, 128, 128)))
    predicted = pp.condition_size((w, h))
    print(f"{name:<14} {str(predicted):>10} {str(observed.condition):>10}")
    assert observed.condition == predicted

# %% [markdown]
# ### 3. Resize and normalise: the tensor, from scratch
# Three steps, each a small function in `kontext_teach.preprocessing`:
# 1. `to_rgb`: an explicit policy for image modes (section 7); RGB passes unchanged;
# 2. `resize_lanczos`: `image.resize((w, h), Image.Resampling.LANCZOS)`: exactly the target size, so
#    the aspect ratio changes when the bucket's differs (no crop, no padding);
# 3. `pil_to_model_tensor`: uint8 `[H, W, 3]` → float `/ 255` → `[B, 3, H, W]` → `2x − 1` ∈ [-1, 1].
#
# diffusers does the same inside `VaeImageProcessor.resize` and `.preprocess` (`pil_to_numpy`,
# `numpy_to_pt`, `normalize`). One difference worth knowing: tensors and arrays given as `image` are
# resized with `torch.nn.functional.interpolate`, nearest neighbour, not LANCZOS; pass PIL images.
#
# Our example: a 640×360 (16:9) drawing with a round sun and a square grid.

# %%
def example_picture(width=640, height=360):
    """A sky, a ground, a round sun and a square grid: distortion shows at a glance."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):  # vertical gradient sky
        draw.line([(0, y), (width, y)], fill=(90 + y // 4, 150 + y // 6, 235))
    draw.rectangle([0, int(height * 0.72), width, height], fill=(70, 140, 70))
    for x in range(0, width, 40):
        draw.line([(x, 0), (x, height)], fill=(255, 255, 255), width=1)
    for y in range(0, height, 40):
        draw.line([(0, y), (width, y)], fill=(255, 255, 255), width=1)
    radius, centre = height // 5, (int(width * 0.62), int(height * 0.38))
    draw.ellipse([centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius], fill=(250, 200, 40))
    return image


picture = example_picture()
condition = pp.preprocess_condition_image(picture)  # [1, 3, H, W]
plan = pp.plan_sizes(picture.size)
print("input", picture.size, "mode", picture.mode, "-> condition tensor", tuple(condition.shape), condition.dtype,
      f"range [{condition.min().item():.3f}, {condition.max().item():.3f}]")
print(f"stretch {100 * (plan.stretch - 1):+.1f}% in width")

# %% [markdown]
# Before and after, both drawn at their true pixel shape. The dashed circle on the right is what the sun
# would be without distortion: the 16:9 picture was widened to 1392×752 (1.85:1), so the sun is now
# a slightly wide ellipse and the grid cells are slightly wide rectangles. Nothing at the edges is lost.

# %%
snapped = ((condition[0].permute(1, 2, 0) + 1) / 2).numpy()  # [H, W, 3] in [0, 1] for display
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [640 / 360, 1392 / 752]})
left.imshow(picture)
left.set_title(f"input {picture.size[0]}x{picture.size[1]} (aspect {plan.image.aspect:.2f})")
right.imshow(snapped)
scale_x, scale_y = plan.condition.width / plan.image.width, plan.condition.height / plan.image.height
sun_x, sun_y, sun_radius = int(640 * 0.62), int(360 * 0.38), 360 // 5  # as drawn by example_picture
right.add_patch(plt.Circle((sun_x * scale_x, sun_y * scale_y), sun_radius * scale_y,  # the sun, undistorted
                           fill=False, ls="--", color="black", lw=1.2))
right.set_title(f"condition {plan.condition} (aspect {plan.condition.aspect:.2f}): stretched, not cropped")
for ax in (left, right):
    ax.set_xlabel("width (px)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Check**, twice: against diffusers' `VaeImageProcessor` called the way the pipeline calls it
# (`resize`, then `preprocess`), and against the tensor that actually reached the VAE encoder inside
# `pipe(...)`. Then once more for a batch of two non-square images (the pipeline sizes a list by
# its first image).

# %%
processor = pipe.image_processor
size = pp.condition_size(picture.size)
theirs = processor.preprocess(processor.resize(picture, size.height, size.width), size.height, size.width)
_ = kt.compare("condition vs image_processor", condition, theirs, atol=1e-6, rtol=0)
observed = pp.observe_pipeline_sizes(pipe, picture)
_ = kt.compare("condition vs VAE input", condition, observed.condition_tensor, atol=1e-6, rtol=0)

batch = [example_picture(500, 220), example_picture(300, 200)]
observed = pp.observe_pipeline_sizes(pipe, batch, prompt=["a", "b"])
_ = kt.compare("batch of 2 vs VAE input", pp.preprocess_condition_image(batch), observed.condition_tensor,
               atol=1e-6, rtol=0)

# %% [markdown]
# ### 4. The output size: 1024² unless you say otherwise
# `pp.output_size(height, width, max_area)` is the pipeline's formula. Below are the cases from the
# three diffusers issues, plus the fix: `height`, `width` **and** `max_area = height * width`. Even
# passing the input's own size (832×1216) does not give it back: the area is rescaled to about 1 MP and
# floored, 832×1232. The last column is what the pipeline really generated (read from the position ids
# of its target tokens).
#
# The pipeline does log *"Generation `height` and `width` have been adjusted to …"*, but at the
# `WARNING` level of diffusers' logger, which many applications (and `kt.setup()`) switch off; so in
# practice the change is silent.

# %%
portrait = Image.new("RGB", (832, 1216), (128, 128, 128))
cases = {
    "#11886 defaults": {},
    "height/width = input": dict(height=1216, width=832),
    "#11942 preferred h/w": dict(height=1568, width=672),
    "#12406 max_area 768²": dict(max_area=768**2),
    "h/w + max_area=h*w": dict(height=1248, width=832, max_area=1248 * 832),
}
print(f"{'case':<22} {'condition':>10} {'predicted':>10} {'pipeline':>10}")
for name, kwargs in cases.items():
    plan = pp.plan_sizes(portrait.size, **kwargs)
    observed = pp.observe_pipeline_sizes(pipe, portrait, **kwargs)
    print(f"{name:<22} {str(plan.condition):>10} {str(plan.output):>10} {str(observed.output):>10}")
    assert (observed.condition, observed.output) == (plan.condition, plan.output)

# %% [markdown]
# To scale: the portrait of issue #11886 is snapped to 832×1248 as the condition, but the output is
# the default square; with `max_area = height * width` the output takes the condition's shape, as in
# BFL's reference sampler. (The input is drawn at 1 MP: only its shape matters.)

# %%
fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.4))
pp.draw_plan(pp.plan_sizes(portrait.size), top, title="pipe(image=portrait, prompt=...)  # defaults")
pp.draw_plan(pp.plan_sizes(portrait.size, height=1248, width=832, max_area=1248 * 832), bottom,
             title="pipe(image=portrait, prompt=..., height=1248, width=832, max_area=1248 * 832)")
plt.tight_layout()
plt.show()

# %% [markdown]
# `SizePlan.notes()` names these surprises in words, so a script can print them before a long run:

# %%
print(pp.plan_sizes(portrait.size).describe())

# %% [markdown]
# ### 5. `plan_sizes`, checked over many inputs
# `pp.plan_sizes(image_size, height, width, max_area, auto_resize)` predicts both sizes. Here it meets
# the pipeline on 12 random combinations of input size, height, width, `max_area` and `_auto_resize`
# (with `_auto_resize=False` the condition keeps its own floored size, however large; we keep the
# inputs under 1200 px so that the check stays fast).

# %%
rng = np.random.default_rng(1)
matches = 0
print(f"{'input':>10} {'height':>6} {'width':>6} {'max_area':>9} {'auto':>5} | {'condition':>10} {'output':>10} | ok")
for _ in range(12):
    image_size = (int(rng.integers(16, 1200)), int(rng.integers(16, 1200)))
    kwargs = {"max_area": int(rng.choice([256**2, 512**2, 768**2, 1024**2])), "_auto_resize": bool(rng.random() < 0.6)}
    if rng.random() < 0.7:
        kwargs["height"] = int(rng.integers(64, 2048))
    if rng.random() < 0.7:
        kwargs["width"] = int(rng.integers(64, 2048))
    plan = pp.plan_sizes(image_size, height=kwargs.get("height"), width=kwargs.get("width"),
                         max_area=kwargs["max_area"], auto_resize=kwargs["_auto_resize"])
    observed = pp.observe_pipeline_sizes(pipe, Image.new("RGB", image_size), **kwargs)
    ok = (observed.condition, observed.output) == (plan.condition, plan.output)
    matches += ok
    print(f"{str(Size(*image_size)):>10} {kwargs.get('height', '-'):>6} {kwargs.get('width', '-'):>6} "
          f"{kwargs['max_area']:>9} {str(kwargs['_auto_resize']):>5} | {str(plan.condition):>10} "
          f"{str(plan.output):>10} | {ok}")
print(f"{matches}/12 predictions match the pipeline")
assert matches == 12

# %% [markdown]
# And once end to end, without hooks: a full (one-step) edit at a small size returns a PIL image of
# exactly the predicted size. One denoising step says nothing about the edit, so we look at the size only.

# %%
kwargs = dict(height=48, width=80, max_area=48 * 80, _auto_resize=False)
small_picture = example_picture(160, 90)
edited = pipe(image=small_picture, prompt="make the sun blue", num_inference_steps=1, **kwargs).images[0]
predicted = pp.plan_sizes(small_picture.size, height=48, width=80, max_area=48 * 80, auto_resize=False).output
print("pipeline output", edited.size, "| predicted", tuple(predicted))
assert edited.size == predicted

# %% [markdown]
# ### 6. Sizes that are not multiples of 16
# The pipeline floors silently: the condition image in `get_default_height_width`, the output after
# the `max_area` rescale. `pp.fit_to_multiple` makes the choice explicit: by default it raises an
# error that names both fixes, and `rounding="floor"` or `"nearest"` apply one. Neither is what the
# pipeline makes of `height=750, width=1000`: it rescales the area to `max_area` first and floors
# after, so flooring alone is its answer only with `max_area=height*width`. The error says so, and
# the last two lines ask the pipeline itself.

# %%
try:
    pp.fit_to_multiple(1000, 750)
except ValueError as error:
    print("ValueError:", error)
print("floor  ", pp.fit_to_multiple(1000, 750, rounding="floor"))
print("nearest", pp.fit_to_multiple(1000, 750, rounding="nearest"))
print("fine   ", pp.fit_to_multiple(1024, 768))
for label, extra in [("default max_area", {}), ("max_area=750*1000", dict(max_area=750 * 1000))]:
    made = pp.observe_pipeline_sizes(pipe, Image.new("RGB", (64, 64)), height=750, width=1000, **extra).output
    assert made == pp.output_size(height=750, width=1000, **extra)
    print(f"pipeline, height=750, width=1000, {label}: {made}")

# %% [markdown]
# Bad arguments get the same treatment in `plan_sizes`, where the pipeline would fail late or
# misread them: `height=0` silently means 1024; a condition image under 16 px *high* floors to
# height 0 and divides by zero (`aspect_ratio = width / height`), while one under 16 px *wide*
# runs, with an aspect ratio of 0, and is stretched to the tallest preferred resolution. Both,
# from the pipeline, then from `plan_sizes`:

# %%
for thin in [(12, 400), (400, 12)]:
    try:
        print(f"pipeline, a {Size(*thin)} image: condition {pp.observe_pipeline_sizes(pipe, Image.new('RGB', thin)).condition}")
    except ZeroDivisionError as error:
        print(f"pipeline, a {Size(*thin)} image: ZeroDivisionError: {error}")
bad_calls = {"plan_sizes((12, 400))": lambda: pp.plan_sizes((12, 400)),
             "plan_sizes((640, 360), height=0)": lambda: pp.plan_sizes((640, 360), height=0),
             "plan_sizes((640, 360), max_area=100)": lambda: pp.plan_sizes((640, 360), max_area=100)}
for call, run in bad_calls.items():
    try:
        run()
    except ValueError as error:
        print(f"{call}\n  -> ValueError: {error}")

# %% [markdown]
# ### 7. Odd image modes
# The Kontext pipeline builds its `VaeImageProcessor` with `do_convert_rgb=False`, so a PIL image goes
# to `np.array` in whatever mode it has. The table shows what diffusers' preprocessing makes of each mode
# and what then happens in the pipeline; the last column is `pp.to_rgb`'s policy. RGBA, grayscale and
# palette images fail deep inside the VAE with a message about convolution weights; YCbCr is accepted
# and silently encoded with the wrong colours (|diff| is the largest difference from the RGB image's
# tensor, on the [-1, 1] scale); 16-bit images are divided by 255 into values far above 1.

# %%
base = picture.resize((64, 36))
gray16 = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))  # a real 16-bit range
odd = {"RGB": base, "RGBA": base.convert("RGBA"), "LA": base.convert("LA"), "L": base.convert("L"),
       "P": base.convert("P"), "CMYK": base.convert("CMYK"), "YCbCr": base.convert("YCbCr"), gray16.mode: gray16,
       "F": base.convert("F")}
policy = {"RGB": "unchanged", "RGBA": "composite on white", "LA": "composite on white", "L": "gray -> 3 channels",
          "P": "palette -> RGB", "CMYK": "PIL convert (no ICC)", "YCbCr": "PIL convert", "I;16": "scale /257",
          "F": "ValueError (range?)"}
tiny = dict(height=32, width=64, max_area=32 * 64, _auto_resize=False)
reference = pp.preprocess_condition_image(base, auto_resize=False)
print(f"{'mode':<6} {'diffusers tensor':<16} {'range':<17} {'pipeline':<30} {'to_rgb policy'}")
for mode, image in odd.items():
    tensor = processor.preprocess(image, 32, 64)
    try:
        seen = pp.observe_pipeline_sizes(pipe, image, **tiny).condition_tensor
        diff = (seen - reference).abs().max().item()
        verdict = "runs, " + ("same as RGB" if diff == 0 else f"wrong colours, |diff| {diff:.2f}")
    except RuntimeError:
        verdict = f"RuntimeError ({tensor.shape[1]} channel{'s' if tensor.shape[1] > 1 else ''})"
    value_range = f"[{tensor.min().item():.2f}, {tensor.max().item():.2f}]"
    print(f"{mode:<6} {str(tuple(tensor.shape)):<16} {value_range:<17} {verdict:<30} {policy[mode]}")

# %% [markdown]
# The error a user actually sees for an RGBA PNG, and what `pp.to_rgb` does instead:

# %%
try:
    pipe(image=odd["RGBA"], prompt="p", num_inference_steps=1, output_type="latent", **tiny)
except RuntimeError as error:
    print("RuntimeError:", error)
try:
    pp.to_rgb(odd["F"])
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# Transparency needs a decision, because the RGB values under fully transparent pixels are arbitrary
# (often black). `diffusers.utils.load_image` and BFL's `prepare_kontext` call `convert("RGB")`, which
# simply drops alpha, so those hidden colours appear. `pp.to_rgb` composites over a background colour
# instead (white by default, `background=` to choose). A sticker with soft edges:

# %%
sticker = Image.new("RGBA", (240, 240), (0, 0, 0, 0))  # transparent, stored colour black
mask = Image.new("L", (240, 240), 0)
ImageDraw.Draw(mask).ellipse([40, 40, 200, 200], fill=255)
mask = mask.resize((60, 60), Image.Resampling.LANCZOS).resize((240, 240), Image.Resampling.BILINEAR)  # soft edge
sticker.paste(Image.new("RGBA", (240, 240), (220, 60, 60, 255)), (0, 0), mask)
checker = np.kron((np.indices((12, 12)).sum(axis=0) % 2), np.ones((20, 20)))[..., None] * 0.25 + 0.7
alpha = np.asarray(sticker)[..., 3:] / 255
shown = np.asarray(sticker)[..., :3] / 255 * alpha + checker * (1 - alpha)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
panels = [(shown, "RGBA (transparency as a checkerboard)"), (sticker.convert("RGB"), 'convert("RGB"): alpha dropped'),
          (pp.to_rgb(sticker), "pp.to_rgb: composited on white")]
for ax, (image, title) in zip(axes, panels):
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Check:** for an RGBA image our full preprocessing equals the pipeline's tensor for the same image
# converted by our policy; the pipeline alone cannot take it at all (above).

# %%
observed = pp.observe_pipeline_sizes(pipe, pp.to_rgb(sticker))
_ = kt.compare("RGBA: ours vs VAE input", pp.preprocess_condition_image(sticker), observed.condition_tensor,
               atol=1e-6, rtol=0)

# %% [markdown]
# ### 8. Explore
# Move the sliders: input size, `height`/`width` (0 means "not given", i.e. 1024), the side of
# `max_area`, and `_auto_resize`. The widget only calls `pp.plan_sizes`, `describe` and `draw_plan`,
# which the tests check against the pipeline. Here it is once without sliders, for a 4:3 photo with the
# output asked to follow it:

# %%
def explore(image_width=1600, image_height=1200, height=0, width=0, max_area_side=1024, auto_resize=True):
    """(text, figure) of the sizes the pipeline would use; the text is the error for a bad request."""
    try:
        plan = pp.plan_sizes((image_width, image_height), height=height or None, width=width or None,
                             max_area=max_area_side**2, auto_resize=auto_resize)
    except ValueError as error:
        return f"ValueError: {error}", None
    return plan.describe(), pp.draw_plan(plan).figure


text, figure = explore(1600, 1200, height=880, width=1184, max_area_side=1024)
print(text)
plt.show()

# %%
plan_text, plan_picture = widgets.HTML(), widgets.Image(format="png")  # the widget shows what explore() computes


def show_plan_in_widget(image_width, image_height, height, width, max_area_side, auto_resize):
    text, figure = explore(image_width, image_height, height, width, max_area_side, auto_resize)
    plan_text.value = f"<pre>{html.escape(text)}</pre>"
    plan_picture.value = figure_png(figure) if figure is not None else b""


label = {"style": {"description_width": "initial"}}  # show the whole argument name, not "image_wi…"
controls = widgets.interactive(
    show_plan_in_widget,
    image_width=widgets.IntSlider(1600, 16, 4096, 16, **label),
    image_height=widgets.IntSlider(1200, 16, 4096, 16, **label),
    height=widgets.IntSlider(0, 0, 2048, 16, **label), width=widgets.IntSlider(0, 0, 2048, 16, **label),
    max_area_side=widgets.IntSlider(1024, 256, 2048, 16, **label), auto_resize=True)
widgets.VBox([controls, plan_text, plan_picture])

# %% [markdown]
# ## Summary
# - The condition image is floored to multiples of 16, snapped to the preferred resolution with the
#   closest aspect ratio (17 of them, all about 1 MP), resized with LANCZOS (a stretch, never a crop),
#   and scaled to [-1, 1]: `[B, 3, H, W]`. We rebuilt it and it equals diffusers' tensor exactly.
# - The output size ignores the condition image: `height`/`width` (default 1024) give a shape, the
#   area is `max_area` (default 1024²), the sides are floored to 16. For an exact size pass
#   `height`, `width` and `max_area=height*width`.
# - 16 = 8 (VAE) × 2 (packing); one token per 16×16 pixels, 4096 tokens at 1024².
# - `plan_sizes` predicts both sizes for any input and arguments and agrees with the pipeline.
# - diffusers converts no image modes: RGBA, L and P fail late, YCbCr silently gives wrong colours, 16-bit
#   is mis-scaled. `to_rgb` applies an explicit policy and refuses what it cannot interpret.

# %% [markdown]
# ## Exercises
# Solutions are in `kontext_teach.solutions.s01_image_preprocessing` and are checked by
# `tests/test_solutions_01.py`; try them first.
#
# 1. **Exact output size.** Write `kwargs_for_output_size(width, height)` that returns the pipeline
#    arguments for an output of exactly that size, and refuses sizes that are not multiples of 16.
#    Check it with `pp.plan_sizes` and with `pp.observe_pipeline_sizes`.
# 2. **BFL's default in diffusers.** Write `kwargs_matching_condition(image_size)` that makes the output
#    the size of the resized condition image, as BFL's `prepare_kontext` does by default.
# 3. **No stretch.** Write `crop_to_preferred(image)` that centre-crops an image to the aspect ratio of
#    its preferred resolution and resizes it to that resolution, so that the pipeline keeps it as it is
#    and nothing is distorted. What does the 3:1 panorama lose? (Hint: `Image.resize` takes a `box`.)

# %%
from kontext_teach.solutions import s01_image_preprocessing as s01

print("1:", s01.kwargs_for_output_size(1248, 832))
print("2:", s01.kwargs_matching_condition((832, 1216)))
panorama = example_picture(900, 300)
cropped = s01.crop_to_preferred(panorama)
box = s01.centre_crop_box(panorama.size, Size(*cropped.size))
print(f"3: {panorama.size} -> {cropped.size}, keeps x from {box[0]:.1f} to {box[2]:.1f} of 900 px, "
      f"stretch after cropping {pp.plan_sizes(cropped.size).stretch:.3f}")

# %% [markdown]
# ## References
# - diffusers, `src/diffusers/pipelines/flux/pipeline_flux_kontext.py`: `PREFERRED_KONTEXT_RESOLUTIONS`;
#   `FluxKontextPipeline.__call__` (the `max_area` rescale at its top, step "3. Preprocess image"),
#   `prepare_latents`, `_prepare_latent_image_ids`.
# - diffusers, `src/diffusers/image_processor.py`: `VaeImageProcessor.get_default_height_width`,
#   `.resize`, `.preprocess`, `.pil_to_numpy`, `.numpy_to_pt`, `.normalize`; `src/diffusers/utils/loading_utils.py`:
#   `load_image`.
# - Black Forest Labs, `black-forest-labs/flux`, `src/flux/sampling.py`: `prepare_kontext` (snapping,
#   LANCZOS, `/ 127.5 - 1`, the default target size = the condition's).
# - diffusers issues #11886 ("Issue with FluxKontextPipeline": square output), #11942 ("Kontext pipeline
#   resizing image even if it is within PREFERRED_KONTEXT_RESOLUTIONS"), #12406 (smaller `max_area`,
#   square output); black-forest-labs/flux issue #458.
# - Black Forest Labs et al., *FLUX.1 Kontext: Flow Matching for In-Context Image Generation and Editing
#   in Latent Space*, arXiv:2506.15742 (2025).
# - Pillow documentation: `Image.resize` (filters, `box`), `Image.alpha_composite`, image modes.
# - PyTorch documentation: `torch.nn.Module.register_forward_pre_hook` (used to observe the pipeline).

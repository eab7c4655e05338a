# %% [markdown]
# # 03 · VAE latents: from pixels to the 16 channels the transformer sees
#
# FLUX never denoises pixels. A variational autoencoder (VAE) turns the condition image into
# a small 16-channel *latent*, the transformer works on that, and the VAE turns the final
# latent back into pixels. This notebook rebuilds what `FluxKontextPipeline.prepare_latents`
# does to the condition image (encode, take the posterior mode, shift and scale) and what
# the pipeline does after its last step (unscale, decode), and checks both against diffusers.
# It sits between preprocessing (notebook 01, which makes the [-1, 1] image tensor) and
# packing (notebook 04, which cuts the latent into tokens).
#
# ## What you will learn
# - why a latent pixel covers 8×8 image pixels: `vae_scale_factor = 2 ** (len(block_out_channels) - 1)`,
#   computed for the miniature and for the full-size 83.8 M-parameter VAE
# - that the encoder returns a *distribution* per latent value, not a value, and what
#   `latent_dist.mode()` and `latent_dist.sample()` take from it
# - why Kontext uses the mode for its condition image, and how to measure how much a
#   sample would differ
# - the shift and scale `(z - shift_factor) * scaling_factor` and their inverse at decoding
# - how to look at the 16 channels as images, and how to check your own encoding against
#   the pipeline's image latents
#
# ## Prerequisites
# - `00_overview` (the whole machine) and `01` (how a picture becomes a [-1, 1] tensor)
# - PyTorch tensors and shapes; a normal distribution N(μ, σ²). The VAE is recapped below.

# %%
import kontext_teach as kt

device = kt.setup()  # first: it silences the libraries before diffusers' pipelines are imported

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from diffusers import AutoencoderKL

from kontext_teach.anatomy import full_size
from kontext_teach.lab.harness import figure_png
from kontext_teach.packing import pack_latents, unpack_latents
from kontext_teach.solutions import s03_vae_latents as solutions
from kontext_teach.vae_latents import (VIEWS, decode_image_latents, draw_shapes_image, encode_image_latents,
                                       encode_posterior, encoder_moments, latent_shape,
                                       plot_channel_view, plot_channels, posterior_spread, scale_latents,
                                       split_moments, to_pixels, to_unit_range, unscale_latents, vae_scale_factor)

torch.set_grad_enabled(False)  # inference only: no autograd graphs

# %% [markdown]
# ## Theory
#
# **An autoencoder with a Gaussian in the middle.** The encoder *E* reads an image *x* and
# returns, for every latent value, the mean μ and the log-variance log σ² of a normal
# distribution: the *posterior* q(z | x) = N(μ(x), diag σ²(x)). The decoder *D* maps a
# latent z back to pixels. Latent-diffusion autoencoders (Rombach et al., 2022) are trained
# to reconstruct their input from a sample z = μ + σ·ε (plus perceptual and adversarial
# losses), with a KL penalty that pulls q(z | x) towards N(0, 1). That penalty has a tiny
# weight (10⁻⁶ in the LDM configs), so reconstruction dominates: noise in z costs
# reconstruction quality, and training drives σ down as far as the weak KL term lets it.
#
# **Shapes.** The encoder has one resolution level per entry of `block_out_channels`, and
# every level but the last halves height and width. FLUX's VAE has four levels
# (128, 256, 512, 512 channels), so
#
# `vae_scale_factor = 2 ** (len(block_out_channels) - 1) = 2³ = 8`
#
# (the pipeline computes exactly this in `FluxKontextPipeline.__init__`, and gives its image
# processor `vae_scale_factor * 2 = 16`, the extra 2 for packing), and the encoder's last layer outputs `2 × latent_channels = 32` channels: 16 means, then 16
# log-variances. A [B, 3, H, W] image becomes a [B, 16, H/8, W/8] latent: 64 times fewer
# positions, 16/3 times more channels, 12 times fewer numbers in all.
#
# **Mode or sample.** diffusers wraps the 32 channels in a `DiagonalGaussianDistribution`
# (log-variance clamped to [-30, 20], σ = exp(½ log σ²)). Its `mode()` is μ, the most likely
# latent; its `sample(generator)` is μ + σ·ε with ε ~ N(0, 1). `FluxKontextPipeline` encodes
# the condition image with `retrieve_latents(..., sample_mode="argmax")`, which is `mode()`:
# the same picture always gives the same tokens, and the seed's starting noise stays the
# only randomness of an edit. The two choices differ by σ·ε, so how much the choice matters
# depends on how small σ is next to the spread of μ; we measure it below rather than assume
# it. (Black Forest Labs' reference `AutoEncoder.encode` draws a sample by default,
# `DiagonalGaussian(sample=True)`; diffusers' `train_dreambooth_lora_flux_kontext.py` has
# `--vae_encode_mode`, default `mode`, for target and condition images alike.)
#
# **Shift and scale.** Rectified flow mixes the clean latent with N(0, 1) noise,
# x_t = (1 − t)·x₀ + t·ε, so x₀ should live on the scale of ε: mean about 0, spread about 1.
# The VAE's raw latents do not, so FLUX stores two constants in the VAE config and applies
#
# `latents = (z − shift_factor) · scaling_factor`  (0.1159 and 0.3611 for FLUX)
#
# before packing, and the exact inverse `z = latents / scaling_factor + shift_factor` before
# decoding. Stable Diffusion 1.x had only a scale (0.18215); FLUX adds the shift.
#
# **Common misreadings.** "The VAE latents go into the transformer as they are": they are
# shifted, scaled, then packed 2×2 into 64-feature tokens (notebook 04). "Mode and sample
# are interchangeable because the posterior variance is always tiny": that holds only as
# far as a given VAE's σ is small, which is measured, not assumed; and even then it is the
# choice of `mode()`, not a small σ, that makes the condition latents deterministic.

# %% [markdown]
# ## Practice
#
# ### 1. The size: 8× down, 16 channels
#
# The scale factor comes from the config, not from a constant. We compute it for the
# embedded miniature and for the full-size FLUX.1-Kontext-dev VAE, built on PyTorch's
# *meta* device (shapes, no memory), and run our encoder on a 1024² meta image.

# %%
pipe = kt.load_pipeline()
vae = pipe.vae
with torch.device("meta"):
    full_vae = AutoencoderKL(**full_size.VAE)
    full_posterior = encode_posterior(full_vae, torch.empty(1, 3, 1024, 1024))  # shapes only

kt.compare("vae_scale_factor", torch.tensor(vae_scale_factor(vae.config)), torch.tensor(pipe.vae_scale_factor))
print(f"\n{'':<22}{'miniature':>14}{'FLUX.1-Kontext-dev':>22}")
for label, value in [("block_out_channels", lambda v: str(tuple(v.config.block_out_channels))),
                     ("vae_scale_factor", lambda v: vae_scale_factor(v.config)),
                     ("latent_channels", lambda v: v.config.latent_channels),
                     ("parameters", lambda v: f"{full_size.count_parameters(v) / 1e6:.1f} M")]:
    print(f"{label:<22}{value(vae):>14}{value(full_vae):>22}")
print("\nencode_posterior(full-size VAE, 1024x1024 meta image): mean", tuple(full_posterior.mean.shape))
for w, h in [(1024, 1024), (1248, 832), (672, 1568)]:  # three of Kontext's preferred (width, height)
    print(f"{w}x{h} image -> latent {latent_shape(full_vae.config, 1, h, w)}")

# %% [markdown]
# ### 2. A test picture
#
# A procedurally drawn scene (a few coloured shapes, deterministic), 192×128 pixels, turned
# into a [-1, 1] tensor by the pipeline's own image processor (notebook 01 rebuilds that
# step). 192 and 128 are multiples of 16: 8 for the VAE, 2 for the packing.

# %%
height, width = 128, 192
picture = draw_shapes_image(width, height)
image = pipe.image_processor.preprocess(picture, height, width)  # [1, 3, 128, 192]
print("image", tuple(image.shape), f"values in [{image.min().item():.2f}, {image.max().item():.2f}]")

# %% [markdown]
# ### 3. The encoder returns a distribution
#
# The encoder network is diffusers' `vae.encoder` (a convolutional ResNet with one
# attention block in the middle; nothing in it is specific to Kontext). What we rebuild is
# what happens to its output: 32 channels split into 16 means and 16 log-variances, the
# clamp, the standard deviation. Then we compare with `vae.encode(x).latent_dist`.

# %%
moments = encoder_moments(vae, image)  # [1, 32, 16, 24]: 16 means, then 16 log-variances
posterior = split_moments(moments)  # mean, logvar: [1, 16, 16, 24] each

theirs = vae.encode(image).latent_dist
kt.compare("posterior mean", posterior.mean, theirs.mean)
kt.compare("posterior logvar", posterior.logvar, theirs.logvar)
kt.compare("posterior std", posterior.std, theirs.std)
kt.compare("mode()", posterior.mode(), theirs.mode())
print("encoder output", tuple(moments.shape), "-> mean", tuple(posterior.mean.shape),
      "and logvar", tuple(posterior.logvar.shape))

# %% [markdown]
# Each latent pixel stands for an 8×8 block of the image. Below, the picture with that grid
# drawn on it, next to latent channel 0 stretched to the same size: every square on the
# right is one latent value, computed from (mostly) the block at the same place on the left.
# The encoder's receptive field is wider than 8×8, so neighbours leak in.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].imshow(picture)
for x in range(0, width + 1, 8):
    axes[0].axvline(x - 0.5, color="white", lw=0.4, alpha=0.6)
for y in range(0, height + 1, 8):
    axes[0].axhline(y - 0.5, color="white", lw=0.4, alpha=0.6)
axes[0].set_title(f"image {width}x{height}, 8x8 blocks")
limit = posterior.mean[0, 0].abs().max().item()
axes[1].imshow(posterior.mean[0, 0], cmap="RdBu_r", vmin=-limit, vmax=limit, extent=(0, width, height, 0),
               interpolation="nearest")
axes[1].set_title(f"latent channel 0 (mode), {width // 8}x{height // 8}")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# All 16 channels of the mode, on one colour scale centred on 0 (red positive, blue
# negative). What the channels respond to is learned: with trained weights they tend to
# carry colour and edges of the scene, but no channel is "the red channel" by design.

# %%
plot_channels(posterior.mode()[0], "16 latent channels of the picture: posterior mode (unscaled)")
plt.show()

# %% [markdown]
# ### 4. `mode()` versus `sample()`
#
# **Determinism.** Encoding the same image twice gives the same mode, bit for bit. A sample
# is fresh noise each time, unless you pass a generator with the same seed. Our
# `Posterior.sample` draws exactly diffusers' noise for the same generator.

# %%
again = vae.encode(image).latent_dist
kt.compare("sample(seed 0)", posterior.sample(torch.Generator().manual_seed(0)),
           theirs.sample(torch.Generator().manual_seed(0)))
print("two encodes, mode() identical:  ", torch.equal(theirs.mode(), again.mode()))
print("two encodes, sample() identical:", torch.equal(theirs.sample(), again.sample()))
print("same seed, sample() identical:  ",
      torch.equal(theirs.sample(torch.Generator().manual_seed(1)), again.sample(torch.Generator().manual_seed(1))))

# %% [markdown]
# **How big is the noise?** Compare the posterior's σ with the spread of the means across
# latent pixels: if σ is a small fraction of that spread, a sample is the mode plus a little
# grain; if it is comparable, a sample is a different latent. The numbers below are measured
# on whichever VAE is loaded. The embedded miniature's VAE was trained on the flat shapes
# of the toy world only (appendix A1), so its ratio tells you about the miniature, not about
# FLUX; run this cell on FLUX.1-Kontext-dev to measure the real one.

# %%
spread = posterior_spread(posterior)
print(f"spread of the means (std over all latent values): {spread['mean_spread']:.2f}")
print(f"posterior std, averaged over all latent values:    {spread['typical_std']:.2f}")
print(f"ratio std / spread:                               {spread['ratio']:.2f}")

# %%
channel = 0
maps = [posterior.mode()[0, channel], posterior.sample(torch.Generator().manual_seed(0))[0, channel],
        posterior.sample(torch.Generator().manual_seed(1))[0, channel], posterior.std[0, channel]]
titles = ["mode()", "sample(), seed 0", "sample(), seed 1", "posterior std"]
limit = maps[0].abs().max().item()
fig, axes = plt.subplots(1, 5, figsize=(16, 2.8), gridspec_kw=dict(width_ratios=[1, 1, 1, 1, 1.3]))
for ax, values, title in zip(axes, maps, titles):
    std_map = title == "posterior std"
    ax.imshow(values, cmap="magma" if std_map else "RdBu_r", vmin=0 if std_map else -limit,
              vmax=values.max().item() if std_map else limit, interpolation="nearest")
    ax.set_title(f"channel {channel}: {title}", fontsize=9)
    ax.axis("off")
bins = np.linspace(-4, 4, 81)
axes[4].hist(posterior.mean.flatten().numpy(), bins=bins, alpha=0.6, label="means μ")
axes[4].hist(posterior.std.flatten().numpy(), bins=bins, alpha=0.6, label="std σ")
axes[4].set_title(f"all {vae.config.latent_channels} channels", fontsize=9)
axes[4].legend(fontsize=8)
plt.show()

# %% [markdown]
# **What the choice does to an edit.** The ratio is about latents; what a user sees is the
# edited image. The pipeline also accepts latents instead of a picture (a tensor with
# `latent_channels` channels skips its VAE encoding), so we can run one edit of the toy world
# twice from the same starting noise: with the mode, as the pipeline does, and with a sample.
# First a check that handing over the scaled mode is the same as handing over the picture.

# %%
from kontext_teach.toy import edit_metric, toy_world

pair = toy_world.make_pair(toy_world.HELDOUT_SEEDS.start + 1, "recolour_one")
side = pair.source.size[0]
source = pipe.image_processor.preprocess(pair.source, side, side)  # [1, 3, 64, 64]
condition_latents = {"mode()": encode_image_latents(vae, source),
                     "sample(), seed 0": encode_image_latents(vae, source, sample=True,
                                                              generator=torch.Generator().manual_seed(0))}
edit_call = dict(prompt=pair.instruction, height=side, width=side, max_area=side * side, _auto_resize=False,
                 num_inference_steps=28, guidance_scale=2.5, max_sequence_length=edit_metric.TEXT_LENGTH,
                 output_type="pt")
edited = {name: pipe(image=latents_in, generator=torch.Generator().manual_seed(0), **edit_call).images
          for name, latents_in in condition_latents.items()}  # [1, 3, 64, 64] each, in [0, 1]
from_picture = pipe(image=pair.source, generator=torch.Generator().manual_seed(0), **edit_call).images
kt.compare("edit from the picture vs from mode() latents", from_picture, edited["mode()"])
source_pixels = to_unit_range(source)
print(f"instruction: {pair.instruction!r}")
print(f"mean |edited - source| per pixel, the edit itself:  {(edited['mode()'] - source_pixels).abs().mean().item():.4f}")
print(f"mean |mode edit - sample edit| per pixel:            "
      f"{(edited['mode()'] - edited['sample(), seed 0']).abs().mean().item():.4f}")

# %% [markdown]
# Read the two numbers together: if the second is small next to the first, mode or sample
# hardly changes the edit on this VAE; if it is comparable, the choice is part of the result.
# The pipeline's `mode()` removes the question, and keeps the same picture giving the same
# condition tokens.

# %% [markdown]
# ### 5. Shift and scale, and the pipeline's image latents
#
# The constants come from the VAE config. Scaling the mode gives exactly what
# `prepare_latents` hands to the transformer for the condition image, after packing: we
# compare packed against packed, and unpacked against unpacked (with `unpack_latents`
# from notebook 04). Then the same for a batch of two different non-square pictures.

# %%
shift, scale = vae.config.shift_factor, vae.config.scaling_factor
flux_shift, flux_scale = full_size.VAE["shift_factor"], full_size.VAE["scaling_factor"]
print(f"loaded VAE: shift_factor {shift}, scaling_factor {scale} | FLUX.1: shift_factor {flux_shift}, "
      f"scaling_factor {flux_scale}")
latents = scale_latents(posterior.mode(), shift, scale)  # [1, 16, 16, 24]
print("image latents", tuple(latents.shape), "-> packed", tuple(pack_latents(latents).shape))

channels = vae.config.latent_channels
_, image_latents, _, _ = pipe.prepare_latents(image=image, batch_size=1, num_channels_latents=channels, height=height,
                                              width=width, dtype=torch.float32, device="cpu",
                                              generator=torch.Generator().manual_seed(0))  # [1, 96, 64]
kt.compare("packed image latents", pack_latents(latents), image_latents)
kt.compare("unpacked image latents", latents, unpack_latents(image_latents, height // 8, width // 8))

batch = pipe.image_processor.preprocess([draw_shapes_image(96, 160, seed=s) for s in (1, 2)], 160, 96)
_, batch_latents, _, _ = pipe.prepare_latents(image=batch, batch_size=2, num_channels_latents=channels, height=160,
                                              width=96, dtype=torch.float32, device="cpu", generator=None)
batch_check = kt.compare("batch of 2, 160x96", pack_latents(encode_image_latents(vae, batch)), batch_latents)

# %% [markdown]
# Where the scaled values land, next to the N(0, 1) noise they will be mixed with. The
# miniature's constants were measured on its own latents when its VAE was trained
# (`mini_training` picks the shift and scale that give them mean 0 and std 1), and they
# came out close to 0 and 1 (printed above): on the left, scaling hardly moves the
# histogram. FLUX's VAE needs a real correction. On the right, the same formula with FLUX's
# constants, applied to these latents only to show what it does (shift by `shift_factor`,
# shrink by `scaling_factor`); on FLUX's own latents it is what brings them to the noise's
# scale. Exercise 2 computes the constants that would standardise a set of latents.

# %%
flux_scaled = scale_latents(posterior.mode(), flux_shift, flux_scale)
fig, axes = plt.subplots(1, 2, figsize=(12, 3), sharey=True)
bins = np.linspace(-5, 5, 101)
panels = [(latents, f"(z - {shift}) * {scale}: the loaded VAE's constants"),
          (flux_scaled, f"(z - {flux_shift}) * {flux_scale}: FLUX's constants")]
for ax, (scaled, label) in zip(axes, panels):
    ax.hist(posterior.mode().flatten().numpy(), bins=bins, density=True, alpha=0.5, label="raw mode z")
    ax.hist(scaled.flatten().numpy(), bins=bins, density=True, alpha=0.5, label=label)
    ax.plot(bins, np.exp(-bins**2 / 2) / np.sqrt(2 * np.pi), color="black", lw=1.2, label="N(0, 1) noise")
    ax.set_xlabel("latent value")
    ax.legend(fontsize=8)
plt.show()
for name, values in [("raw", posterior.mode()), ("scaled, own constants", latents),
                     ("scaled, FLUX's constants", flux_scaled)]:
    print(f"{name:<26} mean {values.mean().item():+.2f}, std {values.std().item():.2f}")

# %% [markdown]
# ### 6. The way back: unscale, decode
#
# After the last step the pipeline unpacks the tokens, undoes the scaling and runs the
# decoder. Two checks: our encode-then-decode equals `AutoencoderKL.forward` (encode, mode,
# decode, no scaling at all: the shift and scale cancel), and our decoding of the
# pipeline's final latents (`output_type="latent"`) equals the image the pipeline returns
# (`output_type="pt"`) for the same seed.

# %%
round_trip = decode_image_latents(vae, latents)  # [1, 3, 128, 192], roughly in [-1, 1]
kt.compare("decode(encode(x))", round_trip, vae(image).sample, atol=1e-4, rtol=1e-4)
kt.compare("unscale(scale(z))", unscale_latents(latents, shift, scale), posterior.mode(), atol=1e-6)

edit = dict(image=picture, prompt="paint the house blue", height=height, width=width, max_area=height * width,
            _auto_resize=False, num_inference_steps=2)
final_tokens = pipe(**edit, output_type="latent", generator=torch.Generator().manual_seed(0)).images  # [1, 384, 64]
final_image = pipe(**edit, output_type="pt", generator=torch.Generator().manual_seed(0)).images  # [1, 3, 128, 192]
ours = to_unit_range(decode_image_latents(vae, unpack_latents(final_tokens, height // 8, width // 8)))
decode_check = kt.compare("decoded pipeline latents", ours, final_image)

# %% [markdown]
# The round trip as pictures: the input, the decoded mode, the decoded sample, and where
# they differ. How close the reconstruction is depends only on how well the VAE was trained
# (FLUX's reconstructs megapixel photos with fine detail); the arithmetic checked above does
# not depend on the weights at all. This picture is not from the toy world that the
# miniature's VAE was trained on (other shapes, sizes and colours), so its error is that of a
# scene outside the training data; the last line gives the error on a held-out toy-world scene
# for comparison.

# %%
sample_trip = decode_image_latents(vae, encode_image_latents(vae, image, sample=True,
                                                             generator=torch.Generator().manual_seed(0)))
pixels = to_pixels(torch.cat([image, round_trip, sample_trip]))  # [3, 128, 192, 3] in [0, 1]
difference = np.abs(pixels[1] - pixels[2]).mean(-1)
fig, axes = plt.subplots(1, 4, figsize=(12, 2.4))
for ax, shown, title in zip(axes, [pixels[0], pixels[1], pixels[2], difference],
                            ["input", "decode(mode)", "decode(sample, seed 0)", "|mode - sample| after decoding"]):
    ax.imshow(shown, cmap="magma" if shown.ndim == 2 else None, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.show()
toy_round_trip = decode_image_latents(vae, encode_image_latents(vae, source))  # the toy-world source above
print(f"mean squared error, input vs decode(mode), in [-1, 1] units: "
      f"{(round_trip.clamp(-1, 1) - image).pow(2).mean().item():.3f} for this picture, "
      f"{(toy_round_trip.clamp(-1, 1) - source).pow(2).mean().item():.3f} for the toy-world scene")

# %% [markdown]
# ### 7. Explore the channels
#
# Pick a channel and a view: the mode, a sample (change the seed to see the noise move), or
# the posterior std. The picture uses the colour scale of that channel's mode, so a sample
# that looks very different from the mode is a sample whose σ is large. The computation is
# `kontext_teach.vae_latents.channel_view`, tested; the widget only calls it and puts the
# figure into an image widget (so nothing is printed into the cell when it runs without a
# front end, as under the tests). One plain call first, for readers without a kernel:

# %%
plot_channel_view(posterior, channel=3, view="sample", seed=0)
plt.show()

# %%
channel_picture = widgets.Image(format="png")


def show_channel(channel=0, view="mode", seed=0):
    channel_picture.value = figure_png(plot_channel_view(posterior, channel, view, seed))


explorer = widgets.interactive(show_channel, channel=widgets.IntSlider(value=0, min=0, max=vae.config.latent_channels - 1),
                               view=widgets.ToggleButtons(options=VIEWS), seed=widgets.IntSlider(value=0, min=0, max=9))
widgets.VBox([explorer, channel_picture])

# %% [markdown]
# ## Summary
# - The VAE is `2 ** (len(block_out_channels) - 1) = 8` times smaller per side and has 16
#   channels: a [B, 3, H, W] image becomes [B, 16, H/8, W/8], 12× fewer numbers. The
#   full-size VAE has 83.8 M parameters; the scale factor is read from its config.
# - The encoder outputs 32 channels: the mean and log-variance of a Gaussian per latent
#   value. `mode()` is the mean and is deterministic; `sample()` adds σ·ε.
# - Kontext's pipeline encodes the condition image with `mode()`; how much a sample would
#   differ is σ relative to the spread of the means, a property of the trained VAE that you
#   can measure with `posterior_spread`.
# - The transformer sees `(mode − shift_factor) · scaling_factor`; decoding applies the
#   exact inverse `latents / scaling_factor + shift_factor` before the decoder.
# - Our encoding equals `prepare_latents`' image latents (packed and unpacked, several
#   sizes and batches), and our decoding equals the pipeline's output image.

# %% [markdown]
# ## Exercises
# 1. **Compression.** Write `compression_ratio(vae_config, height, width)`: the number of
#    values in the image divided by the number in its latent. Check it against the real
#    tensors for a few sizes, and explain why it does not depend on the size.
# 2. **Your own constants.** Write `estimate_shift_and_scale(raw_latents)` returning the
#    (shift, scale) that make `(z - shift) * scale` have mean 0 and standard deviation 1
#    over a batch of unscaled latents. Apply it to the miniature's latents of a few pictures.
# 3. **Caching latents for training.** LoRA trainers encode the whole data set once and
#    cache the latents. Write `encode_in_chunks(vae, images, chunk_size)` that encodes a
#    large batch chunk by chunk and returns the same latents as one call on the whole
#    batch. Why can that hold? Which layers could mix the images of a batch (BatchNorm
#    would), and does this VAE have any? (Its norms are GroupNorm, per image.)
#
# Solutions: `kontext_teach/solutions/s03_vae_latents.py`, tested in `tests/test_solutions_03.py`.
# Write yours first; the cell below runs the reference solutions.

# %%
print("exercise 1:", solutions.compression_ratio(vae.config, height, width),
      solutions.compression_ratio(full_vae.config, 1024, 1024))
raw = vae.encode(batch).latent_dist.mode()
own_shift, own_scale = solutions.estimate_shift_and_scale(raw)
standardised = scale_latents(raw, own_shift, own_scale)
print(f"exercise 2: mean {standardised.mean().item():+.3f}, std {standardised.std().item():.3f} after standardising")
chunked = solutions.encode_in_chunks(vae, batch, 1)
# batch size 1 vs 2 may take different float paths in the convolutions: allow fp32-level differences
print("exercise 3: chunks of 1 == one batch:", torch.allclose(chunked, encode_image_latents(vae, batch), atol=1e-4,
                                                               rtol=1e-4))

# %% [markdown]
# ## References
# - diffusers, `pipelines/flux/pipeline_flux_kontext.py`: `retrieve_latents`
#   (`sample_mode="argmax"`), `FluxKontextPipeline._encode_vae_image`, `prepare_latents`, the
#   decoding at the end of `__call__`, `vae_scale_factor`.
# - diffusers, `models/autoencoders/autoencoder_kl.py` (`AutoencoderKL.encode`, `decode`,
#   `forward`) and `models/autoencoders/vae.py` (`Encoder`, `Decoder`,
#   `DiagonalGaussianDistribution`).
# - diffusers, `examples/dreambooth/train_dreambooth_lora_flux_kontext.py`: `--vae_encode_mode`,
#   `--cache_latents`, the shift and scale applied to target and condition latents.
# - Black Forest Labs, `flux` repository: `src/flux/modules/autoencoder.py` (`DiagonalGaussian`,
#   `AutoEncoder.encode` / `decode` with `scale_factor` and `shift_factor`),
#   `src/flux/sampling.py` (`prepare_kontext`).
# - D. P. Kingma, M. Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.
# - R. Rombach et al., *High-Resolution Image Synthesis with Latent Diffusion Models*,
#   CVPR 2022 (the KL-regularised autoencoder and the rescaling of its latents), and its
#   repository `CompVis/latent-diffusion`, `configs/autoencoder/autoencoder_kl_*.yaml`
#   (`kl_weight: 0.000001`, `double_z: True`).
# - Black Forest Labs, *FLUX.1 Kontext: Flow Matching for In-Context Image Generation and
#   Editing in Latent Space*, 2025.

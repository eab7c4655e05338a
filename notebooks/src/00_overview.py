# %% [markdown]
# # 00 · The whole machine
#
# FLUX.1 Kontext edits an image from an instruction: *"make the circle blue"*. This notebook
# runs one edit end to end with `FluxKontextPipeline`, then opens the box and shows every
# tensor that flows through it, with its shape. The rest of the series takes the machine
# apart one step at a time and rebuilds each step from scratch.
#
# ## What you will learn
# - what goes into Kontext (an image and a prompt) and what comes out, in diffusers' terms
# - the six stages of an edit: preprocessing, text encoding, VAE encoding, packing with
#   position ids, the schedule, and the transformer loop, then decoding
# - the shape of every tensor at full size (1024², 12 B parameters) and in the miniature
#   that runs on your laptop, computed rather than copied from a paper
# - how the notebooks of this series map onto those stages
#
# ## Prerequisites
# - Python and a little PyTorch (tensors, shapes, `nn.Module`)
# - the idea of a diffusion model: start from noise, remove it step by step, guided by a
#   prompt. Everything else is explained as it comes.

# %%
import matplotlib.pyplot as plt
import torch
import kontext_teach as kt
from kontext_teach.anatomy import data_flow, full_size
from kontext_teach.lab import series
from kontext_teach.toy import edit_metric, toy_world

device = kt.setup()

# %% [markdown]
# ## Theory
#
# **Kontext is FLUX.1 [dev] with a second image in the sequence.** FLUX.1 is a
# *rectified-flow transformer*: it works on the latents of a VAE, cut into tokens. Training
# places each noisy latent on a straight line between an image (σ = 0) and pure noise
# (σ = 1), and the transformer learns the velocity along that line, v = noise − image: it
# points from the image towards the noise. Sampling runs the line backwards, from σ = 1
# down to 0, so each step moves *against* v. Kontext (Black Forest Labs, 2025) keeps FLUX.1's
# architecture unchanged (the same transformer class at the same size; its weights were
# trained further, on editing pairs) and adds *context*: the VAE
# tokens of the image to edit are appended to the noisy tokens of the image being made,
# with position ids that mark them as a second "frame". Attention then lets every new
# token look at the old image, at the same time as it looks at the prompt. There is no
# extra image encoder and no cross-attention: one sequence, one attention.
#
# One edit, in order:
#
# 1. **Preprocessing**: the condition image is resized to one of 17 preferred resolutions
#    of about one megapixel, sides multiples of 16, values in [-1, 1] (notebook 01).
# 2. **Prompt encoding**: CLIP turns the prompt into one pooled vector, T5 into a
#    sequence of 512 token states (notebook 02).
# 3. **VAE encoding**: the image becomes a 16-channel latent, 8× smaller per side, then
#    shifted and scaled (notebook 03).
# 4. **Packing and ids**: every 2×2 latent patch becomes one token of 64 numbers; each
#    token gets a 3-number position id for rotary embeddings (notebooks 04 and 05).
# 5. **Schedule**: a list of noise levels σ from 1 to 0, shifted towards noise for large
#    images (notebook 06).
# 6. **Transformer loop**: for each σ, the transformer predicts a velocity *v* for the
#    noisy tokens, and an Euler step moves them: *x ← x + (σ_next − σ)·v* (notebooks 07
#    and 08). Finally the tokens are unpacked and decoded by the VAE.
#
# The series runs everything on an **embedded miniature Kontext**: the very same diffusers
# and transformers classes, with the same structure, at a tiny size, shipped inside the
# package. Every cell also runs on the real FLUX.1-Kontext-dev weights on a GPU:
# `kt.load_pipeline("/path/to/FLUX.1-Kontext-dev")`.

# %% [markdown]
# ## Practice
#
# ### The two models side by side
#
# `kt.load_pipeline()` loads the miniature from the package, offline. The full-size model is
# built on PyTorch's *meta* device: every parameter has a shape but no memory, so we can
# count 12 billion parameters on a laptop.

# %%
pipe = kt.load_pipeline()
full = full_size.meta_components()

mini_counts = full_size.parameter_counts(pipe.components)
full_counts = full_size.parameter_counts(full)
print(f"{'network':<16}{'class':<26}{'miniature':>12}{'FLUX.1-Kontext-dev':>21}")
for name in ("transformer", "text_encoder_2", "text_encoder", "vae"):
    print(f"{name:<16}{type(full[name]).__name__:<26}{mini_counts[name]:>12,}{full_counts[name]:>21,}")

# %% [markdown]
# ### One edit, end to end
#
# A condition image, an instruction, and one call. The miniature was trained on a toy world
# of flat shapes (appendix A1); this pair is a held-out one it never saw. It works at 64×64
# pixels, so we pass the size explicitly: by default the pipeline **rescales every output to
# about 1024² pixels** whatever the input size (`max_area=1024**2`), and snaps the condition
# image to a preferred resolution (`_auto_resize=True`). Notebook 01 explains both. The
# miniature was trained with 24 T5 tokens per prompt, hence `max_sequence_length=24`.

# %%
pair = toy_world.make_pair(toy_world.HELDOUT_SEEDS.start, "recolour_all")
source, prompt = pair.source, pair.instruction
result = pipe(image=source, prompt=prompt, height=64, width=64, max_area=64 * 64, _auto_resize=False,
              num_inference_steps=28, guidance_scale=2.5, max_sequence_length=edit_metric.TEXT_LENGTH,
              generator=torch.Generator().manual_seed(0))
edited = result.images[0]
print("input", source.size, source.mode, "-> output", edited.size, edited.mode)
print("edit correct:", edit_metric.score_image(edited, pair).edit_correct)

# %%
fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
for ax, image, title in zip(axes, [source, edited, pair.target], ["condition image", f"“{prompt}”", "expected"]):
    ax.imshow(image)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
plt.show()

# %% [markdown]
# The miniature is small and often wrong (appendix A1 measures how often, per kind of edit,
# and shows its failures), but every tensor takes the same path, with the same shapes, as in
# the real model. That path is what the rest of this notebook shows.
#
# ### The shape at every arrow
#
# `data_flow.trace_edit` runs each stage once with the real networks and records what
# flows out of it. For the full-size model it runs on the meta device: shapes propagate,
# no arithmetic happens, no memory is used. Nothing in the diagrams below is typed by hand.

# %%
tokenizers = {"tokenizer": pipe.tokenizer, "tokenizer_2": pipe.tokenizer_2}
full_arrows = data_flow.trace_edit({**full, **tokenizers}, height=1024, width=1024, device="meta")
mini_arrows = data_flow.trace_edit(pipe.components, height=64, width=64)

print(f"{'what flows':<22}{'miniature, 64²':<22}{'FLUX.1-Kontext-dev, 1024²'}")
for small, large in zip(mini_arrows, full_arrows):
    print(f"{small.name:<22}{str(list(small.shape)):<22}{list(large.shape)}")

# %%
data_flow.draw_data_flow(full_arrows, "FLUX.1-Kontext-dev, a 1024² edit (shapes from the meta device)")
plt.show()

# %% [markdown]
# Read the diagram from the top. Four lanes feed the transformer: the condition image
# (blue), the CLIP vector and the T5 sequence (orange), and the noise with its position
# ids and noise levels (green). Inside the loop the transformer sees
# 4096 target + 4096 context = 8192 image tokens, plus 512 text tokens inside the model,
# and returns a velocity for all of them; only the first 4096, the target, are kept.
#
# The miniature has the same diagram with smaller numbers:

# %%
data_flow.draw_data_flow(mini_arrows, "The embedded miniature, a 64² edit (shapes from a real run)")
plt.show()

# %% [markdown]
# ### Check: the trace agrees with the pipeline
#
# The pipeline can stop before decoding (`output_type="latent"`) and return the packed
# target tokens. Their shape must be the one our trace predicts, for square and
# non-square sizes and for batches.

# %%
for batch, height, width in [(1, 64, 64), (2, 48, 96)]:
    latents = pipe(image=torch.zeros(batch, 3, height, width), prompt=[prompt] * batch, height=height, width=width,
                   max_area=height * width, _auto_resize=False, num_inference_steps=2, output_type="latent").images
    traced = {a.name: a.shape for a in data_flow.trace_edit(
        pipe.components, height=height, width=width, batch_size=batch, num_steps=2)}
    assert tuple(latents.shape) == traced["velocity (target)"], (latents.shape, traced)
    print(f"batch {batch}, {height}x{width}: pipeline latents {list(latents.shape)} == traced {list(traced['velocity (target)'])}")

# %% [markdown]
# ### The map of the series
#
# Each notebook takes one stage, rebuilds it in `kontext_teach` and asserts that it equals
# diffusers:

# %%
print(series.series_map())

# %% [markdown]
# ## Summary
# - An edit is: preprocess → encode the prompt twice (CLIP pooled, T5 sequence) → VAE-encode
#   the condition image → pack 2×2 patches into tokens with 3-axis position ids → shift a
#   schedule by image size → loop the transformer with Euler steps → unpack and decode.
# - Kontext's only change to FLUX.1's architecture is at the input: context tokens appended
#   after the target tokens, marked by a first position coordinate of 1. The weights are not
#   FLUX.1's: they were trained further on editing pairs.
# - At 1024² the transformer handles 8192 image tokens and 512 text tokens per step, with
#   11.9 B parameters; the miniature has the same shapes at a tiny scale.
#
# ## Exercises
# 1. Trace a full-size edit at 1024×768 (condition image of the same size) on the meta
#    device. How many target, context and text tokens does the transformer see?
#    (Solution: `kontext_teach.solutions.s00_overview.full_size_token_counts`.)
# 2. How many times larger is each full-size network than the miniature's?
#    (Solution: `kontext_teach.solutions.s00_overview.parameter_ratio`.)
# 3. Call the pipeline on the 64×64 image without `height`, `width` and `max_area`. What
#    size comes out, and why? (Notebook 01 answers it.)
#
# ## References
# - Black Forest Labs, *FLUX.1 Kontext: Flow Matching for In-Context Image Generation and
#   Editing in Latent Space*, arXiv:2506.15742 (2025).
# - diffusers: `src/diffusers/pipelines/flux/pipeline_flux_kontext.py`
#   (`FluxKontextPipeline.__call__`), `models/transformers/transformer_flux.py`
#   (`FluxTransformer2DModel`), `models/autoencoders/autoencoder_kl.py`,
#   `schedulers/scheduling_flow_match_euler_discrete.py`.
# - Black Forest Labs reference code: `black-forest-labs/flux`, `src/flux/sampling.py`
#   (`prepare_kontext`, `get_schedule`, `denoise`).
# - Liu et al., *Flow Straight and Fast: Learning to Generate and Transfer Data with
#   Rectified Flow*, ICLR 2023; Esser et al., *Scaling Rectified Flow Transformers for
#   High-Resolution Image Synthesis* (SD3), ICML 2024.

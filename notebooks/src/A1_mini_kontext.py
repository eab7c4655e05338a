# %% [markdown]
# # A1 · Appendix: the miniature Kontext and its toy world
#
# Every notebook of the series runs on an embedded miniature Kontext: the real diffusers
# classes, tiny, trained on a toy editing world so that its pictures mean something. This
# appendix shows that world, the automatic metric that scores an edit, how the miniature was
# trained, how it compares with the real model layer by layer, and where it fails.
#
# ## What you will learn
# - the toy editing world: scenes, edit families, phrasings, train and held-out seeds
# - how an edit is scored automatically from the scene description, and the two baselines
# - how the miniature's VAE and transformer were trained (the exact command is recorded)
# - the miniature and FLUX.1-Kontext-dev side by side, shape for shape
# - what the miniature gets right and wrong
#
# ## Prerequisites
# - notebook 00; notebooks 06, 08 and 09 help for the training part

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
from PIL import ImageOps

import kontext_teach as kt
from kontext_teach.anatomy import full_size
from kontext_teach.toy import edit_metric, toy_world
from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR
from kontext_teach.solutions import sA1_mini_kontext as solutions

device = kt.setup()

# %% [markdown]
# ## Theory
#
# A teaching model has to be small enough to train and run on a laptop CPU, yet big enough
# to show the real mechanics, and its outputs must be checkable. So the miniature keeps every
# structural property of FLUX.1 Kontext (16 latent channels, an 8× VAE, 2×2 packing into 64
# features, three RoPE axes, guidance embedding, CLIP pooled + T5 sequence, the same
# scheduler) and shrinks only widths and depths. It learns a world where the right answer is
# known exactly: a few flat shapes on a plain background, and instructions that recolour,
# remove or mirror them. Because each picture is generated from a scene description, the
# target of every edit is known, and a program can check whether an output is right.
#
# Training follows the real recipe in two stages, as FLUX's own components were trained
# separately: first the VAE (reconstruction plus a small KL term), whose latent mean and
# spread are then measured to set `shift_factor` and `scaling_factor` (FLUX: 0.1159, 0.3611);
# then the transformer with the Kontext objective of notebook 09 (noisy target tokens, clean
# context tokens with index 1, velocity target, logit-normal noise levels), keeping an
# exponential moving average (EMA) of its weights. The text encoders stay frozen, as in FLUX.

# %% [markdown]
# ## Practice
#
# ### The toy world
#
# A seed fixes a scene; a family turns it into an edit with one of several phrasings. Seeds
# below one million are for training, the next million are held out.

# %%
families = list(toy_world.FAMILIES)
fig, axes = plt.subplots(len(families), 4, figsize=(8, 2.1 * len(families)))
for row, family in enumerate(families):
    for column, seed in enumerate([toy_world.HELDOUT_SEEDS.start + 10 * row, toy_world.HELDOUT_SEEDS.start + 10 * row + 1]):
        pair = toy_world.make_pair(seed, family)
        axes[row, 2 * column].imshow(pair.source)
        axes[row, 2 * column + 1].imshow(pair.target)
        axes[row, 2 * column].set_title(f"{family}", fontsize=8)
        axes[row, 2 * column + 1].set_title(f"“{pair.instruction}”", fontsize=7)
for ax in axes.flat:
    ax.axis("off")
plt.show()

for family in families:
    reserved = " (reserved for the LoRA notebook)" if family in toy_world.RESERVED_FAMILIES else ""
    print(f"{family:<18}{len(toy_world.all_instructions(family))} phrasings{reserved}")
same = toy_world.make_pair(1_000_123, "remove")
again = toy_world.make_pair(1_000_123, "remove")
assert np.array_equal(np.asarray(same.target), np.asarray(again.target)) and same.instruction == again.instruction
print("deterministic: the same seed gives the same pair")

# %% [markdown]
# ### Scoring an edit
#
# From the source and target scenes the metric lists regions: each shape of the target (its
# interior must have the shape's colour), each place a shape has left (must be background),
# and the rest (must stay background). A region is right when at least 75 % of its pixels
# have the expected colour (nearest palette colour); an edit is right when all regions are.

# %%
pair = toy_world.make_pair(toy_world.HELDOUT_SEEDS.start + 7, "remove")
found = edit_metric.regions(pair.source_scene, pair.target_scene)
fig, axes = plt.subplots(1, len(found) + 2, figsize=(2.1 * (len(found) + 2), 2.4))
axes[0].imshow(pair.source)
axes[0].set_title("source", fontsize=8)
axes[1].imshow(pair.target)
axes[1].set_title(pair.instruction, fontsize=8)
for ax, region in zip(axes[2:], found):
    ax.imshow(region.mask, cmap="gray")
    ax.set_title(f"{region.name}\nmust be {region.colour}", fontsize=7)
for ax in axes:
    ax.axis("off")
plt.show()

for name, answer in [("ground truth", pair.target), ("copy of the source", pair.source),
                     ("mirrored target", ImageOps.mirror(pair.target))]:
    score = edit_metric.score_image(answer, pair)
    print(f"{name:<20} edit correct {str(score.edit_correct):<5}  region accuracy {score.region_accuracy:.2f}  "
          f"PSNR {score.psnr:6.2f} dB")

# %% [markdown]
# ### How the shipped miniature was trained
#
# The training runs left their record in the package: the exact arguments of
# `python -m kontext_teach.toy.mini_training`, the VAE's measurements and the transformer's loss.
# The miniature was trained in five runs, each continuing the transformer of the one
# before (`--transformer`). The first trained the VAE (the later ones reuse it with `--vae`);
# runs 1-3 ran on two CPU cores with 4,000 training pairs; run 4 ran four minutes on one H200
# with 60,000 pairs, 256 per step, sharing the GPU with two other trial runs
# (`scripts/gpu_session.sh`); run 5 polished it for 45 minutes on two CPU cores at a low
# learning rate. More pairs and more steps is what moved the two hard families, recolour one
# shape and remove one shape, from about 0.2 after run 3 to 0.6 and above.

# %%
record = json.loads((EMBEDDED_MODEL_DIR / "training_record.json").read_text())
def command(args: dict) -> str:
    """The mini_training command line that a record's arguments stand for."""
    words = []
    for key, value in args.items():
        if key in ("out", "base") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        words.append(flag if value is True else f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}")
    return "python -m kontext_teach.toy.mini_training " + " ".join(words) + " --out DIR"


runs = [record]
while isinstance(runs[-1].get("continued_from"), dict):  # a run that continued an earlier one
    runs.append(runs[-1]["continued_from"])
runs = runs[::-1]  # oldest first
for number, run in enumerate(runs, start=1):
    print(f"run {number} ({run['device']}, {run['minutes']:.0f} min): {command(run['args'])}")
vae = runs[0]["vae"]  # the first run trained the VAE; the later ones loaded it
print(f"{sum(run['minutes'] for run in runs):.0f} minutes in all")
print(f"VAE: shift_factor {vae['shift_factor']:.4f}, scaling_factor {vae['scaling_factor']:.4f}, "
      f"round-trip PSNR {vae['psnr']:.1f} dB")
history, seen, starts = [], 0, []  # loss against training pairs seen (the runs used different batch sizes)
for run in runs:
    starts.append(seen)
    batch = run["args"]["batch"]
    history += [dict(entry, seen=seen + entry["step"] * batch) for entry in run["transformer_history"]]
    seen = history[-1]["seen"]
steps = sum(run["transformer_history"][-1]["step"] for run in runs)
print(f"transformer: {record['transformer_parameters'] / 1e6:.2f} M parameters, {steps} steps, "
      f"{seen / 1e6:.2f} M training pairs seen")

# %%
fig, ax = plt.subplots(figsize=(5.5, 3))
ax.plot([entry["seen"] / 1e6 for entry in history], [entry["loss"] for entry in history])
for start in starts[1:]:
    ax.axvline(start / 1e6, color="grey", lw=0.5)  # where a run continued the one before
ax.set_xlabel("training pairs seen (millions); grey lines: a new run")
ax.set_ylabel("Kontext loss (mean of the logged steps)")
ax.set_title("transformer training", fontsize=10)
plt.show()

# %% [markdown]
# ### The miniature and the real model, shape for shape

# %%
pipe = kt.load_pipeline()
full = full_size.meta_components()
rows = [
    ("transformer hidden size", lambda c: c["transformer"].config.num_attention_heads * c["transformer"].config.attention_head_dim),
    ("attention heads x head dim", lambda c: f"{c['transformer'].config.num_attention_heads} x {c['transformer'].config.attention_head_dim}"),
    ("double + single blocks", lambda c: f"{c['transformer'].config.num_layers} + {c['transformer'].config.num_single_layers}"),
    ("RoPE axes", lambda c: tuple(c["transformer"].config.axes_dims_rope)),
    ("in_channels (packed)", lambda c: c["transformer"].config.in_channels),
    ("T5 width -> context_embedder", lambda c: c["transformer"].config.joint_attention_dim),
    ("CLIP width -> pooled projection", lambda c: c["transformer"].config.pooled_projection_dim),
    ("T5 layers", lambda c: c["text_encoder_2"].config.num_layers),
    ("CLIP layers", lambda c: c["text_encoder"].config.num_hidden_layers),
    ("VAE widths", lambda c: tuple(c["vae"].config.block_out_channels)),
    ("VAE latent channels", lambda c: c["vae"].config.latent_channels),
    ("VAE shift, scale", lambda c: f"{c['vae'].config.shift_factor:.4f}, {c['vae'].config.scaling_factor:.4f}"),
    ("transformer parameters", lambda c: f"{full_size.count_parameters(c['transformer']):,}"),
    ("all parameters", lambda c: f"{sum(full_size.parameter_counts(c).values()):,}"),
]
print(f"{'':<32}{'miniature':>22}{'FLUX.1-Kontext-dev':>24}")
for name, read in rows:
    print(f"{name:<32}{str(read(pipe.components)):>22}{str(read(full)):>24}")

# %% [markdown]
# ### How well it edits
#
# Held-out pairs of every family, sampled by `FluxKontextPipeline` with 28 steps, next to the
# two baselines: copying the source (a model that ignores the instruction) and the VAE's
# reconstruction of the target (the best the transformer can do through this decoder).

# %%
heldout = toy_world.make_pairs("heldout", 40, families=families)
evaluation = edit_metric.evaluate(pipe, heldout, steps=28, batch_size=20)
print(edit_metric.format_table(evaluation))

# %% [markdown]
# ### Where it fails
#
# The wrong answers, with the regions that failed. Looking at them tells more than the
# average: which shape was edited instead, whether the colour is right but the shape
# smeared, whether the edit happened at all.

# %%
wrong = [(image, pair) for image, pair in zip(evaluation.images, heldout)
         if not edit_metric.score_image(image, pair).edit_correct][:6]
if wrong:
    fig, axes = plt.subplots(3, len(wrong), figsize=(2.2 * len(wrong), 6.4), squeeze=False)
    for column, (image, pair) in enumerate(wrong):
        failed = solutions.failed_regions(image, pair)
        for row, (picture, title) in enumerate([(pair.source, f"({column + 1}) {pair.instruction}"),
                                                (pair.target, "target"), (image, f"model: {len(failed)} wrong")]):
            axes[row, column].imshow(picture)
            axes[row, column].set_title(title, fontsize=7)
            axes[row, column].axis("off")
    plt.show()
for column, (image, pair) in enumerate(wrong, start=1):
    print(f"({column}) {pair.family:<17} wrong regions: {', '.join(solutions.failed_regions(image, pair))}")
hardest = solutions.hardest_family(evaluation, exclude=toy_world.RESERVED_FAMILIES)
print(f"{len(wrong)} of the first wrong answers shown; hardest of the trained families: {hardest}")

# %% [markdown]
# ## Summary
# - The toy world gives every edit an exactly known answer, so edits can be scored by a
#   program: per region colour checks, edit accuracy, region accuracy and PSNR.
# - The miniature is FLUX.1 Kontext's architecture at about 1/2500 of the transformer's size,
#   trained in two stages (VAE, then transformer with the Kontext objective), first on two
#   CPU cores, then four minutes on one GPU; the record in the package says exactly how.
# - Copying the input scores zero; the VAE ceiling bounds what the transformer can reach.
#
# ## Exercises
# 1. Score a "model" that mirrors every source image. Which family does it solve?
#    Solution: `kontext_teach.solutions.sA1_mini_kontext.mirror_everything_baseline`.
# 2. Find the family the miniature finds hardest. Solution: `hardest_family` (used above).
# 3. List the regions an answer got wrong. Solution: `failed_regions` (used above).
#
# ## References
# - `kontext_teach/toy_world.py`, `edit_metric.py`, `mini_training.py` (this package).
# - Black Forest Labs, *FLUX.1 Kontext*, arXiv:2506.15742 (2025): KontextBench and the
#   in-context editing setup the toy world imitates.
# - Esser et al., *Scaling Rectified Flow Transformers* (SD3), ICML 2024: logit-normal
#   timestep sampling; Karras et al., *Analyzing and Improving the Training Dynamics of
#   Diffusion Models*, CVPR 2024: EMA of weights.

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
# - how the miniature's VAE and transformer were trained, and how its guidance input was
#   distilled from a CFG teacher (the exact commands are recorded)
# - how well it edits, on held-out scenes and on scenes from a second, independent renderer
# - the miniature and FLUX.1-Kontext-dev side by side, shape for shape
# - what the miniature gets right and wrong, which shapes it confuses, and where it loses them
#
# ## Prerequisites
# - notebook 00; notebooks 06, 08 and 09 help for the training part

# %%
import itertools
import json

import matplotlib.pyplot as plt
import numpy as np
import torch
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
# `python -m kontext_teach mini-training`, the machine, the VAE's measurements and the
# transformer's loss. Each run after the first continued the transformer of the one before
# (`--transformer`, or `--teacher` for the distillation), so the record is a chain; the list
# below is read from it, oldest first.
#
# The last two runs made the miniature *guidance-distilled*, as FLUX.1 [dev] is (notebook 08):
# a **teacher** trained with the instruction dropped for a tenth of the samples (so that it
# can do classifier-free guidance, two passes per step), then a **student** that takes the
# guidance value g as an input and learns to reproduce the teacher's guided velocity
# u + g·(c − u) in one pass, for g drawn between 1 and 6. The teacher runs also trained at
# longer text lengths (128 and 512 T5 tokens, part of the steps), so the pipeline's default
# `max_sequence_length=512` works, and they stressed the hard part of the world: the families
# that must find one shape by its name were drawn more often (`--family-weights`), and the
# tokens an edit changes (`--edit-weight`) and the tokens of the shapes (`--shape-weight`)
# weighed more in the loss. The last teacher run also made the transformer one single block
# deeper (`--add-single-blocks`), the new block starting as the identity, so it kept what the
# runs before had learned. The printout below lists each run's weights, read from the record.

# %%
record = json.loads((EMBEDDED_MODEL_DIR / "training_record.json").read_text())
def command(args: dict) -> str:
    """The mini-training command line that a record's arguments stand for."""
    words = []
    for key, value in args.items():
        if key in ("out", "base") or value is None or value is False or value == "" or value == 0.0:
            continue
        flag = "--" + key.replace("_", "-")
        words.append(flag if value is True else f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return "python -m kontext_teach mini-training " + " ".join(words) + " --out DIR"


def phase(run: dict) -> str:
    if run.get("distillation_history"):
        return "guidance distillation of the run before"
    if run["args"].get("prompt_dropout"):
        return "CFG teacher (prompt dropout)"
    return "transformer" + (" and VAE" if run["vae"]["history"] else "")


runs = [record]
while isinstance(runs[-1].get("continued_from"), dict):  # a run that continued an earlier one
    runs.append(runs[-1]["continued_from"])
runs = runs[::-1]  # oldest first
for number, run in enumerate(runs, start=1):
    print(f"run {number}: {phase(run)}, {run.get('device_name', run['device'])}, {run['minutes']:.0f} min")
    print(f"    {command(run['args'])}")
for number, run in enumerate(runs, start=1):
    args = run["args"]
    if args.get("prompt_dropout"):
        print(f"run {number} (teacher): family weights {args.get('family_weights')}, edit weight "
              f"{args.get('edit_weight')}, shape weight {args.get('shape_weight', 0.0)}, single blocks added "
              f"{args.get('add_single_blocks', 0)}")
vae = runs[0]["vae"]  # the first run trained the VAE; the later ones loaded it
print(f"{sum(run['minutes'] for run in runs):.0f} minutes in all")
print(f"VAE: shift_factor {vae['shift_factor']:.4f}, scaling_factor {vae['scaling_factor']:.4f}, "
      f"round-trip PSNR {vae['psnr']:.1f} dB")
history, seen, starts = [], 0, []  # loss against training pairs seen (the runs used different batch sizes)
for run in runs:
    starts.append(seen)
    batch = run["args"]["batch"]
    history += [dict(entry, seen=seen + entry["step"] * batch) for entry in run["transformer_history"]]
    seen = history[-1]["seen"] if history else 0
steps = sum(run["transformer_history"][-1]["step"] for run in runs if run["transformer_history"])
distilled = sum(run["distillation_history"][-1]["step"] for run in runs if run.get("distillation_history"))
print(f"transformer: {record['transformer_parameters'] / 1e6:.2f} M parameters, {steps} training steps "
      f"({seen / 1e6:.2f} M pairs seen) and {distilled} distillation steps; T5 lengths trained: "
      f"{record.get('text_lengths', [record['max_sequence_length']])}")

# %%
fig, ax = plt.subplots(figsize=(5.5, 3))
ax.plot([entry["seen"] / 1e6 for entry in history], [entry["loss"] for entry in history])
for start in starts[1:]:
    ax.axvline(start / 1e6, color="grey", lw=0.5)  # where a run continued the one before
ax.set_xlabel("training pairs seen (millions); grey lines: a new run")
ax.set_ylabel("Kontext loss (mean of the logged steps)\n(edit-weighted from the teacher run on)", fontsize=8)
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
# The numbers the README quotes come from a larger measurement, made once after training by
# `python -m kontext_teach.toy.miniature_report` and stored beside the weights
# (`evaluation.json`): more held-out pairs per family, the same pairs at the pipeline's default
# text length of 512 T5 tokens, and scenes from a second renderer.

# %%
report = json.loads((EMBEDDED_MODEL_DIR / "evaluation.json").read_text())
columns = [("heldout", f"held out, {report['text_length']} tokens"), ("heldout_512", "held out, 512 tokens"),
           ("drawn", f"drawn scenes, {report['text_length']} tokens")]
print(f"{'family':<14}" + "".join(f"{title:>28}" for _, title in columns))
for family in toy_world.BASE_FAMILIES + ("overall",):
    cells = []
    for key, _ in columns:
        if key == "drawn":
            row = report[key]["model"][family]
            cells.append(f"{row['edit_accuracy']:.2f} of {row['count']}")
        else:
            row = next(r for r in report[key]["model"] if r["family"] == family)
            cells.append(f"{row['edit_accuracy']:.2f} of {row['count']}")
    print(f"{family:<14}" + "".join(f"{cell:>28}" for cell in cells))
print(f"({report['steps']} steps, guidance {report['guidance_scale']}; copying the input scores "
      f"{report['drawn']['copy']['overall']['edit_accuracy']:.2f} on the drawn scenes)")

# %% [markdown]
# ### A second renderer
#
# A model can learn the quirks of the program that drew its training data instead of the
# edits. `kontext_teach.toy.drawn_scenes` draws scenes in a different way (PIL's ImageDraw,
# drawn large and box-filtered down) and puts them where the generator never goes: shapes
# smaller and larger than any it trained on, at the border, 1–3 px apart, two shapes of the
# *same* colour (so only the shape word tells which to edit), jittered shades and background.

# %%
from kontext_teach.toy import drawn_scenes  # noqa: E402

drawn = [drawn_scenes.make_drawn_pair(seed, family) for seed in (3, 11) for family in drawn_scenes.FAMILIES]
answers = edit_metric.generate(pipe, drawn, steps=28, max_sequence_length=record["max_sequence_length"])
fig, axes = plt.subplots(3, len(drawn), figsize=(1.7 * len(drawn), 5.6))
for column, (pair, answer) in enumerate(zip(drawn, answers)):
    right = drawn_scenes.edit_correct(answer, pair)
    for row, (picture, title) in enumerate([(pair.source, pair.instruction), (pair.target, "target"),
                                            (answer, "model: right" if right else "model: WRONG")]):
        axes[row, column].imshow(picture)
        axes[row, column].set_title(title, fontsize=6)
        axes[row, column].axis("off")
plt.show()
print(f"{sum(drawn_scenes.edit_correct(a, p) for a, p in zip(answers, drawn))} of {len(drawn)} drawn edits right")

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
# ### Which shapes it tells apart
#
# Among the trained families, the lowest held-out accuracies belong to the two that name one
# shape ("make the circle blue", "remove the square"; the first line below checks this on the
# report). Grouping held-out pairs of those families by the kinds of shape that share the scene (measured once by `miniature_report`, stored as `binding` in
# `evaluation.json`) shows where the name alone is not enough:

# %%
if "binding" in report:
    trained = [r for r in report["heldout"]["model"] if r["family"] in toy_world.BASE_FAMILIES]
    lowest = sorted(trained, key=lambda r: r["edit_accuracy"])[:2]
    print("lowest held-out families: " + ", ".join(f"{r['family']} {r['edit_accuracy']:.2f}" for r in lowest))
    groups = list(next(iter(report["binding"].values())))
    print(f"{'family':<14}" + "".join(f"{group:>24}" for group in groups))
    for family, rows in report["binding"].items():
        cells = [f"{rows[g]['edit_accuracy']:.2f} of {rows[g]['count']}" for g in groups]
        print(f"{family:<14}" + "".join(f"{cell:>24}" for cell in cells))
    for family, rows in report["binding"].items():
        hardest_group = min(rows, key=lambda g: rows[g]["edit_accuracy"])
        easiest_group = max(rows, key=lambda g: rows[g]["edit_accuracy"])
        print(f"{family}: hardest when the scene holds {hardest_group} "
              f"({rows[hardest_group]['edit_accuracy']:.2f}), easiest with {easiest_group} "
              f"({rows[easiest_group]['edit_accuracy']:.2f})")

# %% [markdown]
# Is it the words or the pictures? The words can be checked here: the T5 state of the shape
# word, for the same instruction with each of the three kinds (cosine similarity; 1 would mean
# T5 gives the transformer nothing to tell them apart by).

# %%
kinds = toy_world.KINDS
prompts = [f"make the {kind} blue" for kind in kinds]
ids = pipe.tokenizer_2(prompts, padding="max_length", max_length=record["max_sequence_length"],
                       return_tensors="pt").input_ids  # [3, T]
with torch.no_grad():
    t5_states = pipe.encode_prompt(prompt=prompts, prompt_2=None,
                                   max_sequence_length=record["max_sequence_length"])[0]  # [3, T, D]
word = int((ids[0] != ids[1]).nonzero()[0])  # the first token where the instructions differ
similarity = {(a, b): torch.nn.functional.cosine_similarity(t5_states[i, word], t5_states[j, word], dim=0).item()
              for (i, a), (j, b) in itertools.combinations(enumerate(kinds), 2)}
for (a, b), value in similarity.items():
    print(f"T5 at the shape word, {a} vs {b}: cosine {value:.2f}")
closest = max(similarity, key=similarity.get)
print(f"the closest pair of words for T5: {closest[0]} and {closest[1]}")

# %% [markdown]
# If the hardest scenes above are not the ones whose shape words T5 finds closest, the words
# are not what fails. The pictures come next, in two places. The VAE could lose the difference:
# at 64 px a circle and a square of the same size differ near their corners, a few pixels, and
# the 8× VAE folds each 8×8 patch into one latent pixel. Or the transformer could fail to learn
# it. `kontext_teach.toy.shape_probe` asks both, and `miniature_report` stored the answers
# (`probes` in `evaluation.json`):
#
# - a small classifier on a window of latents around each shape: does the VAE keep the kind?
# - a *linear* classifier on each context token's hidden state, after every block: can the
#   tokens a circle or a square covers be told apart? A linear read-out is what the joint
#   attention can use, since the shape word meets the tokens through dot products. Chance is
#   0.5.

# %%
if "probes" in report:
    probes = report["probes"]
    vae_probe = probes["vae"]
    print(f"VAE: shape kind from the latents around each shape {vae_probe['latents']:.2f}, from the pixels "
          f"{vae_probe['pixels']:.2f} (chance 0.33, {vae_probe['shapes']} held-out shapes)")
    models = [name for name in ("student", "teacher") if name in probes]
    stages = probes["student"]["stages"]
    print(f"circle or square, per token ({probes['student']['tokens']} held-out tokens; chance 0.50):")
    print(f"{'stage':<10}" + "".join(f"{name:>10}" for name in models))
    for i, stage in enumerate(stages):
        print(f"{stage:<10}" + "".join(f"{probes[name]['look_alikes'][i]:>10.2f}" for name in models))
    best = max(max(probes[name]["look_alikes"][1:]) for name in models)
    gained = best - probes["student"]["look_alikes"][0]
    where = "in the transformer, not in the VAE" if vae_probe["latents"] >= 0.9 and best < 0.8 else "elsewhere"
    print(f"best after any block: {best:.2f}, {gained:+.2f} over the packed latents it starts from; "
          f"the look-alikes are lost {where}")
    fig, ax = plt.subplots(figsize=(6, 2.6))
    for name in models:
        ax.plot(stages, probes[name]["look_alikes"], marker="o", label=name)
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("circle or square,\nlinear probe")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title(f"shape kind from the VAE latents: {vae_probe['latents']:.2f}; best token probe: {best:.2f}", fontsize=9)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# So the VAE is not the culprit: the latents around a shape say which kind it is almost
# always. A single packed token does not (the first row), since a shape spreads over several
# tokens and one token may hold only an arc or an edge; joining the neighbours is the
# transformer's job, through attention. The miniature's blocks barely do it: the velocity
# loss pays for it only when an instruction names one of two look-alikes, a small share of
# its training. Levers that pay for it directly, in `mini-training`: `--perception-weight`
# (`toy.perception`: a training-only linear head must say which kind covers each context
# token, after one block, on every sample) and `--grounding-weight` (`toy.grounding`: which
# tokens the edit changes); more pixels per shape (`--size 128`) make the corners bigger.
# Finding the named shape among look-alikes is the open problem of this miniature.

# %% [markdown]
# ## Summary
# - The toy world gives every edit an exactly known answer, so edits can be scored by a
#   program: per region colour checks, edit accuracy, region accuracy and PSNR.
# - The miniature is FLUX.1 Kontext's architecture at a tiny fraction of the transformer's size,
#   trained in stages as FLUX was: the VAE, then the transformer with the Kontext objective,
#   then a CFG teacher and a guidance-distilled student; the record in the package says
#   exactly how, on which machine and for how long.
# - A second renderer checks that the edits, not the generator's quirks, were learned.
# - Grouping the failures by what shares the scene finds the weak spot (look-alike shapes);
#   a check of the text encoder's states rules out the words, and probes of the VAE's latents
#   and of each block's tokens show where the difference is lost: in the transformer.
# - Copying the input scores zero; the VAE ceiling bounds what the transformer can reach.
#
# ## Exercises
# 1. Score a "model" that mirrors every source image. Which family does it solve?
#    Solution: `kontext_teach.solutions.sA1_mini_kontext.mirror_everything_baseline`.
# 2. Find the family the miniature finds hardest. Solution: `hardest_family` (used above).
# 3. List the regions an answer got wrong. Solution: `failed_regions` (used above).
#
# ## References
# - `kontext_teach/toy/`: `toy_world.py`, `edit_metric.py`, `drawn_scenes.py`, `mini_training.py`,
#   `guidance.py`, `miniature_report.py`, `shape_probe.py`, `perception.py` (this package).
# - Alain & Bengio, *Understanding intermediate layers using linear classifier probes*,
#   ICLR workshop 2017 (linear probes).
# - Meng et al., *On Distillation of Guided Diffusion Models*, CVPR 2023 (guidance distillation);
#   Ho & Salimans, *Classifier-Free Diffusion Guidance*, 2022 (prompt dropout, CFG).
# - Black Forest Labs, *FLUX.1 Kontext*, arXiv:2506.15742 (2025): KontextBench and the
#   in-context editing setup the toy world imitates.
# - Esser et al., *Scaling Rectified Flow Transformers* (SD3), ICML 2024: logit-normal
#   timestep sampling; Karras et al., *Analyzing and Improving the Training Dynamics of
#   Diffusion Models*, CVPR 2024: EMA of weights.

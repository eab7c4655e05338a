# %% [markdown]
# # 08 · The sampling loop
#
# Everything so far prepared the inputs of one transformer call. Sampling calls the
# transformer once per noise level and moves the noisy target tokens a little each time.
# This notebook writes that loop by hand, from the functions of notebooks 01–07 only, and
# checks that it gives exactly what `FluxKontextPipeline` gives.
#
# ## What you will learn
# - the whole denoising loop of a Kontext edit in a dozen lines, and that it equals the pipeline
# - the Euler step `x ← x + (σ_next − σ)·v` and what the model's velocity means at each step
# - guidance as an *input* (one pass) versus true classifier-free guidance (two passes), and
#   what the guidance value does to an edit: a distilled student against its CFG teacher
# - that the edit works with the pipeline's defaults (512 T5 tokens)
# - how the number of steps trades time for edit quality, measured on the toy world
# - what breaks when the context tokens get the same position index as the target
#
# ## Prerequisites
# - notebooks 01–06 (sizes, prompt, latents, packing, ids, schedule) and 07 (the transformer)

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import kontext_teach as kt
from kontext_teach.lab import loading
from kontext_teach.toy import edit_metric, miniature_report, toy_world
from kontext_teach.toy import guidance as cfg
from kontext_teach.packing import pack_latents, unpack_latents
from kontext_teach.position_ids import kontext_image_ids
from kontext_teach.preprocessing import preprocess_condition_image
from kontext_teach.prompt_encoding import encode_prompt
from kontext_teach.sampling import initial_noise, kontext_edit, predict_velocity
from kontext_teach.schedule import euler_step, shift_config, shifted_sigmas, timesteps_from_sigmas
from kontext_teach.solutions import s08_sampling_loop as solutions
from kontext_teach.transformer import KontextTransformer
from kontext_teach.vae_latents import decode_image_latents, encode_image_latents, to_pixels

device = kt.setup()

# %% [markdown]
# ## Theory
#
# **Rectified flow.** Training (notebook 06, and 09 for LoRAs) placed every noisy latent on
# a straight line between a clean latent x₀ (σ = 0) and pure noise n (σ = 1):
# x_σ = (1 − σ)·x₀ + σ·n. Along that line the velocity is constant, dx/dσ = n − x₀, and that
# is what the transformer predicts: a **velocity**, not "the noise" (a common misreading).
#
# **Sampling** runs the line backwards: start at σ = 1 with fresh noise, and integrate
# dx/dσ = v(x, σ) down to σ = 0 with Euler steps on the shifted schedule of notebook 06:
#
#     x ← x + (σ_next − σ) · v(x, σ)        (σ_next < σ, so the step goes against v)
#
# dt = σ_next − σ comes from the schedule, one value per step; there is no other "timestep
# spacing". x − σ·v is the model's guess of the finished latent x₀, but even a perfect model
# could not jump there in one step. Trained with a squared error, the best possible velocity
# gives the *average* of every x₀ that could have led to the current x (the posterior mean
# E[x₀ | x_σ]); at σ = 1, where x is pure noise, that is the blurry average of all plausible
# edits. The true paths from noise to the data curve, so the guess sharpens only as σ falls
# (rectified flows are straightened by reflow or distillation to need fewer steps).
#
# **Kontext's part** is only in the transformer's input: at every step the clean context
# tokens of the condition image are appended after the noisy target tokens, with ids
# (1, row, col), and the output is cut back to the target tokens.
#
# **Guidance.** Classifier-free guidance (CFG; Ho & Salimans) runs the model twice per step,
# with the instruction (velocity c) and without it (u), and steps along u + g·(c − u): g = 1
# is the plain conditional model, g > 1 exaggerates whatever the instruction adds. FLUX.1 [dev]
# and Kontext [dev] are *guidance-distilled*: Black Forest Labs trained a student to produce
# the guided result in one pass, with g as an input (`guidance_scale`, embedded like the
# timestep, notebook 07), following Meng et al. So one forward pass per step is enough. True
# CFG, two passes combined as v = v_neg + s·(v_pos − v_neg), is still available with
# `true_cfg_scale > 1` and a `negative_prompt`, at twice the cost. The miniature was made the
# same way (appendix A1), so its guidance value does something, and its CFG teacher ships
# beside it for comparison.

# %% [markdown]
# ## Practice
#
# ### An edit from the toy world
#
# The embedded miniature was trained on a toy editing world (appendix A1): shapes on a plain
# background and instructions such as recolouring or removing one of them. Its training record
# says which T5 lengths it saw; we sample with the shortest (fast), and show below that the
# pipeline's default of 512 gives the same edit.

# %%
pipe = kt.load_pipeline()
pair = toy_world.make_pair(toy_world.HELDOUT_SEEDS.start + 3, "recolour_one")
size, tokens, steps, guidance = 64, loading.trained_text_length(), 16, 2.5
record = loading.training_record() or {}
print(f"trained with T5 lengths {record.get('text_lengths', [tokens])}; sampling with max_sequence_length={tokens}")
print("instruction:", pair.instruction)
print("scene:      ", toy_world.describe(pair.source_scene))

# %% [markdown]
# ### The loop by hand
#
# Six preparations, then the loop. Each line is a function from an earlier notebook.

# %%
noise = initial_noise(1, 16, size // 8, size // 8, torch.Generator().manual_seed(0))  # [1, 16, 64]

with torch.no_grad():
    prompt_embeds, pooled, _ = encode_prompt(pipe.components, pair.instruction, max_sequence_length=tokens)  # 02
    condition = preprocess_condition_image(pair.source, auto_resize=False)  # 01: [1, 3, 64, 64]
    context = pack_latents(encode_image_latents(pipe.vae, condition))  # 03 + 04: [1, 16, 64]
    ids = kontext_image_ids((size // 16, size // 16), (size // 16, size // 16))  # 05: [32, 3]
    sigmas = shifted_sigmas(steps, noise.shape[1], **shift_config(pipe.scheduler.config))  # 06: [steps + 1], 1 to 0
    guidance_vector = torch.tensor([guidance])

    latents, guesses = noise, []
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        velocity = predict_velocity(pipe.transformer, latents, context, sigma, guidance_vector, pooled,
                                    prompt_embeds, ids)  # 07: [1, 16, 64], target tokens only
        guesses.append(solutions.predicted_clean_latents(latents, velocity, sigma))  # x0 = x - sigma v
        latents = euler_step(latents, velocity, sigma, sigma_next)  # x += (sigma_next - sigma) v
    image = decode_image_latents(pipe.vae, unpack_latents(latents, size // 8, size // 8))  # [1, 3, 64, 64]

print("sigmas:", [round(s, 3) for s in sigmas.tolist()])

# %% [markdown]
# **Check**: the same noise through the pipeline. `latents=` takes packed tokens; with
# `output_type="latent"` the pipeline stops before decoding.

# %%
call = dict(image=pair.source, prompt=pair.instruction, height=size, width=size, max_area=size * size,
            _auto_resize=False, num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=tokens,
            latents=noise)
reference_latents = pipe(**call, output_type="latent").images
reference_image = pipe(**call, output_type="pt").images
kt.compare("latents after the loop", latents, reference_latents)
kt.compare("decoded image", (image / 2 + 0.5).clamp(0, 1), reference_image)

# %% [markdown]
# What this edit did, read off the picture by the toy world's metric (appendix A1): each region
# of the expected picture, the colour it must have, and the colour most of its pixels have. An
# edit can do what was asked and change something else as well (a WRONG row on a shape the
# instruction did not name): the pictures further down show the same edit.

# %%
edited_pixels = to_pixels(image)[0]  # [64, 64, 3] in [0, 1]
labels = edit_metric.classify_colours(edited_pixels)  # [64, 64]: nearest palette colour
for region in edit_metric.regions(pair.source_scene, pair.target_scene):
    found = edit_metric.COLOUR_NAMES[np.bincount(labels[region.mask], minlength=len(edit_metric.COLOUR_NAMES)).argmax()]
    print(f"{region.name:<28} expected {region.colour:<11} found {found:<11} {'ok' if found == region.colour else 'WRONG'}")

# %% [markdown]
# The package's `kontext_edit` is the same loop with batching, true CFG and a choice of
# transformer. With the from-scratch transformer of notebook 07 it gives the same edit:

# %%
scratch = KontextTransformer.from_diffusers(pipe.transformer)
for name, transformer in [("diffusers transformer", None), ("from-scratch transformer", scratch)]:
    result = kontext_edit(pipe.components, pair.source, pair.instruction, height=size, width=size,
                          num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=tokens,
                          latents=noise, transformer=transformer)
    kt.compare(f"kontext_edit, {name}", result.latents, reference_latents, atol=1e-4)

# %% [markdown]
# ### Watching the guess sharpen
#
# At each step the model's velocity implies a finished image, x₀ = x − σ·v. Early guesses
# are blurry averages of everything the edit could be; late ones commit to one answer.

# %%
shown = [0, 1, 2, 4, 8, steps - 1]
with torch.no_grad():
    pictures = [to_pixels(decode_image_latents(pipe.vae, unpack_latents(guesses[i], 8, 8)))[0] for i in shown]
fig, axes = plt.subplots(1, len(shown) + 2, figsize=(2 * (len(shown) + 2), 2.3))
axes[0].imshow(pair.source)
axes[0].set_title("condition", fontsize=9)
for ax, i, picture in zip(axes[1:], shown, pictures):
    ax.imshow(picture)
    ax.set_title(f"step {i + 1}, σ={sigmas[i]:.2f}", fontsize=9)
axes[-1].imshow(pair.target)
axes[-1].set_title("target", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ### Guidance embedding versus true CFG
#
# Count the transformer calls with a forward hook: one per step with the guidance
# embedding, two per step with true CFG.

# %%
calls = []
hook = pipe.transformer.register_forward_hook(lambda module, args, output: calls.append(1))
pipe(**call)
embedded_calls = len(calls)
pipe(**call, true_cfg_scale=2.0, negative_prompt="keep the image unchanged")
hook.remove()
print(f"{steps} steps: guidance embedding {embedded_calls} calls, true CFG {len(calls) - embedded_calls} calls")
assert embedded_calls == solutions.transformer_calls(steps, true_cfg=False)
assert len(calls) - embedded_calls == solutions.transformer_calls(steps, true_cfg=True)

# %%
with_cfg = kontext_edit(pipe.components, pair.source, pair.instruction, height=size, width=size,
                        num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=tokens, latents=noise,
                        true_cfg_scale=2.0, negative_prompt="keep the image unchanged")
reference_cfg = pipe(**call, true_cfg_scale=2.0, negative_prompt="keep the image unchanged", output_type="latent").images
kt.compare("true CFG, by hand", with_cfg.latents, reference_cfg, atol=1e-4)

# %% [markdown]
# ### What the guidance value does
#
# The miniature is made the way FLUX.1 [dev] was (appendix A1): first a **teacher** that can
# do classifier-free guidance, because it was also trained with the instruction dropped; then
# a **student**, the shipped `transformer/`, trained to reproduce the teacher's guided velocity
# u + g·(c − u) in one pass, with g as an input. Turning g up pushes each step further from
# "what the model would do with no instruction" (u) in the direction the instruction adds
# (c − u). Below, one edit at four values: the student with `guidance_scale=g` (one pass per
# step), and the teacher with true CFG at `true_cfg_scale=g` and an empty negative prompt
# (two passes per step).

# %%
folder = loading.resolve_source(None) or loading.EMBEDDED_MODEL_DIR
distilled = cfg.has_teacher(folder)
scales = [1.0, 2.5, 4.0, 6.0]
rows = [("student, guidance_scale = g", pipe, lambda g: dict(guidance_scale=g))]
if distilled:
    teacher = cfg.teacher_pipeline(pipe, folder)
    rows.append(("teacher, true_cfg_scale = g", teacher,
                 lambda g: dict(guidance_scale=cfg.TEACHER_GUIDANCE, **cfg.true_cfg_options(g))))
fig, axes = plt.subplots(len(rows), len(scales) + 1, figsize=(2.1 * (len(scales) + 1), 2.3 * len(rows)),
                         squeeze=False)
for row, (name, model, options) in enumerate(rows):
    axes[row, 0].imshow(pair.source)
    axes[row, 0].set_title(name, fontsize=8)
    for column, g in enumerate(scales, start=1):
        picture = model(**{**call, **options(g)}).images[0]
        axes[row, column].imshow(picture)
        axes[row, column].set_title(f"g = {g}: saturation {cfg.shape_saturation(picture, pair):.2f}",
                                    fontsize=8)
for ax in axes.flat:
    ax.axis("off")
plt.show()

# %% [markdown]
# One picture is an anecdote. The curve below was measured on held-out pairs of all four edit
# families when the miniature was shipped (`python -m kontext_teach.toy.miniature_report`,
# stored in `evaluation.json`): edit accuracy, and the mean saturation of the shapes' pixels,
# for the student and for its teacher with true CFG, over g from 1 to 6. The bars are 95 %
# intervals (Wilson's, `edit_metric.accuracy_interval`): an accuracy measured on a few dozen
# pairs is uncertain by several points either way (the lines under the plot print how many),
# so read the left panel for its trend, not its wiggles.

# %%
report = miniature_report.load_evaluation(folder)
if report is not None:
    curves = report["guidance"]
    fig, (ax_accuracy, ax_saturation) = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, label, style in [("student", "student (one pass)", "o-"), ("teacher_true_cfg", "teacher, true CFG", "s--")]:
        if key in curves:
            scales_measured = [r["guidance"] for r in curves[key]]
            accuracy = [r["edit_accuracy"] for r in curves[key]]
            low, high = zip(*(edit_metric.accuracy_interval(a, curves["pairs"]) for a in accuracy))
            error = [[a - lo for a, lo in zip(accuracy, low)], [hi - a for a, hi in zip(accuracy, high)]]
            ax_accuracy.errorbar(scales_measured, accuracy, yerr=error, fmt=style, capsize=3, label=label)
            ax_saturation.plot(scales_measured, [r["saturation"] for r in curves[key]], style, label=label)
    ax_accuracy.set_ylim(0, 1.02)
    ax_accuracy.set_ylabel(f"edit accuracy\n({curves['pairs']} held-out pairs)")
    ax_saturation.set_ylabel("mean saturation\nof the shapes' pixels")
    for ax in (ax_accuracy, ax_saturation):
        ax.set_xlabel("guidance g")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    for row in curves["student"]:
        low, high = edit_metric.accuracy_interval(row["edit_accuracy"], curves["pairs"])
        print(f"g = {row['guidance']:.1f}: student edit accuracy {row['edit_accuracy']:.2f} "
              f"(95 % interval {low:.2f}-{high:.2f}), saturation {row['saturation']:.3f}, PSNR {row['psnr']:.1f} dB")
    first, last = curves["student"][0], curves["student"][-1]
    change = last["edit_accuracy"] - first["edit_accuracy"]
    print(f"from g = {first['guidance']:.0f} to g = {last['guidance']:.0f} the shapes' saturation changes by "
          f"{last['saturation'] - first['saturation']:+.3f}; the accuracy by {change:+.2f}, "
          f"{'within' if abs(change) < high - low else 'beyond'} the width of one interval ({high - low:.2f})")

# %% [markdown]
# **What that costs.** True CFG runs the transformer twice per step; the distilled student
# runs it once and lands close to the same place. How close is measured directly on the
# velocities: for noisy held-out targets, the student's velocity at g against the teacher's
# u + g·(c − u), relative to the size of the latter.

# %%
if distilled:
    calls.clear()
    hook = teacher.transformer.register_forward_hook(lambda module, args, output: calls.append(1))
    teacher(**{**call, "guidance_scale": cfg.TEACHER_GUIDANCE, **cfg.true_cfg_options(2.5)})
    hook.remove()
    print(f"{steps} steps: student {solutions.transformer_calls(steps, true_cfg=False)} transformer calls, "
          f"teacher with true CFG {len(calls)}")
    gaps = [row for row in report["distillation"] if row["guidance"] > 1]
    for row in gaps:
        print(f"sigma {row['sigma']:.2f}, g = {row['guidance']:.1f}: the student misses the teacher's guided "
              f"velocity by {100 * row['student_error']:.0f} % of its size; guidance itself changes it by "
              f"{100 * row['guidance_change']:.0f} %")

# %%
# NBVAL_IGNORE_OUTPUT
if distilled:
    def seconds(model, **options) -> float:
        start = time.perf_counter()
        for _ in range(3):
            model(**{**call, **options})
        return (time.perf_counter() - start) / 3

    one_pass = seconds(pipe, guidance_scale=2.5)
    two_pass = seconds(teacher, guidance_scale=cfg.TEACHER_GUIDANCE, **cfg.true_cfg_options(2.5))
    print(f"one edit, {steps} steps on this machine: student {one_pass:.2f} s, teacher with true CFG "
          f"{two_pass:.2f} s ({two_pass / one_pass:.1f}x)")

# %% [markdown]
# ### The pipeline's defaults
#
# Called the way most people first call it, without `max_sequence_length`, the pipeline pads
# the instruction to 512 T5 tokens, and every one of the padding tokens takes part in the
# joint attention (notebook 02). A model that only ever saw short prompts is lost there; the
# miniature's teacher runs spent a fifth to a quarter of their steps at 128 or 512 tokens
# (`--long-share`, in the record of appendix A1), so it edits the same way:

# %%
default_call = {key: value for key, value in call.items() if key != "max_sequence_length"}
short, default = pipe(**call).images[0], pipe(**default_call).images[0]
for name, picture in [(f"max_sequence_length={tokens}", short), ("no max_sequence_length (512)", default)]:
    print(f"{name:<32} edit right: {edit_metric.score_image(picture, pair).edit_correct}")
if report is not None and "heldout_512" in report:
    for key, title in [("heldout", f"{report['text_length']} tokens"), ("heldout_512", "512 tokens")]:
        row = next(r for r in report[key]["model"] if r["family"] == "overall")
        print(f"held out, {title}: edit accuracy {row['edit_accuracy']:.2f} over {row['count']} pairs")

# %% [markdown]
# ### Steps against edit quality
#
# The toy world scores an edit automatically (appendix A1): every region of the target must
# have the right colour. Held-out pairs, four edit families, several step counts:

# %%
heldout = toy_world.make_pairs("heldout", 24)
step_counts = [1, 2, 4, 8, 16, 28]
accuracy, seconds = {}, {}
for n in step_counts:
    start = time.perf_counter()
    evaluation = edit_metric.evaluate(pipe, heldout, steps=n, guidance_scale=guidance, batch_size=24)
    seconds[n] = (time.perf_counter() - start) / len(heldout)  # per edit, with encoding, decoding and scoring
    accuracy[n] = evaluation.row("model").edit_accuracy
    print(f"{n:>3} steps: edit accuracy {accuracy[n]:.2f}, PSNR {evaluation.row('model').psnr:.1f} dB")
print(f"copy baseline: {evaluation.row('copy').edit_accuracy:.2f}, "
      f"VAE ceiling: {evaluation.row('ceiling').edit_accuracy:.2f}")

# %% [markdown]
# The time side of the trade, measured in the same loop (it varies from machine to machine, so
# its numbers are not checked): the transformer runs once per step, so the time per edit grows
# with the steps, on top of a fixed cost (encoding, decoding, scoring), while the accuracy above
# stops rising.

# %%
# NBVAL_IGNORE_OUTPUT
for n in step_counts:
    print(f"{n:>3} steps: {1000 * seconds[n]:6.1f} ms per edit ({seconds[n] / seconds[step_counts[0]]:.1f}x "
          f"the time of {step_counts[0]} step), edit accuracy {accuracy[n]:.2f}")

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(step_counts, [accuracy[n] for n in step_counts], "o-")
ax.axhline(evaluation.row("ceiling").edit_accuracy, ls="--", color="gray", label="VAE ceiling")
ax.axhline(evaluation.row("copy").edit_accuracy, ls=":", color="gray", label="copying the input")
ax.set_xscale("log", base=2)
ax.set_xticks(step_counts, [str(n) for n in step_counts])
ax.set_xlabel("sampling steps")
ax.set_ylabel("edit accuracy (held out)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ### What if the context tokens had index 0?
#
# The first position coordinate is the only thing that tells the transformer which image
# tokens are being made and which are given. Give the context tokens 0 instead of 1 and the
# two images sit on the same RoPE grid: a target token and the context token at the same
# (row, col) look like the same place.

# %%
def edit_accuracy(context_index: float) -> float:
    images = []
    for start in range(0, len(heldout), 8):
        chunk = heldout[start:start + 8]
        result = kontext_edit(pipe.components, [p.source for p in chunk], [p.instruction for p in chunk],
                              height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                              max_sequence_length=tokens, context_index=context_index,
                              generator=torch.Generator().manual_seed(start))
        images.extend(to_pixels(result.image))
    scores = [edit_metric.score_image(image, p) for image, p in zip(images, heldout)]
    return sum(s.edit_correct for s in scores) / len(scores)


for index in (1, 0):
    print(f"context index {index}: edit accuracy {edit_accuracy(index):.2f}")

# %% [markdown]
# ## Summary
# - The loop: encode once, then for each σ call the transformer on [noisy target; clean
#   context], keep the target part of the velocity, step x ← x + (σ_next − σ)·v; unpack and
#   decode at the end. Written with the series' functions it equals the pipeline bit for bit.
# - The velocity points from the data to the noise; x − σ·v is the model's current guess of
#   the finished latent.
# - Guidance pushes each step along what the instruction adds, u + g·(c − u). Kontext [dev],
#   like the miniature, is guidance-distilled: g is an input, one pass per step reproduces the
#   teacher's two-pass CFG; true CFG doubles the cost.
# - Edit quality rises quickly with the number of steps and then flattens; the position
#   index 1 is what keeps the condition image apart from the image being made.
#
# ## Exercises
# 1. Write `predicted_clean_latents(latents, velocity, sigma)` (used above).
#    Solution: `kontext_teach.solutions.s08_sampling_loop.predicted_clean_latents`.
# 2. How many transformer calls does an edit of N steps need with and without true CFG?
#    Solution: `transformer_calls`.
# 3. Replace the Euler step with Heun's method (average the velocity at both ends of the
#    step). Is 8 Heun steps better than 16 Euler steps, at the same number of calls?
#    Solution: `heun_step`.
#
# ## References
# - diffusers `pipelines/flux/pipeline_flux_kontext.py`: `FluxKontextPipeline.__call__`
#   (the loop, `true_cfg_scale`), `schedulers/scheduling_flow_match_euler_discrete.py`
#   (`FlowMatchEulerDiscreteScheduler.step`).
# - Black Forest Labs, `black-forest-labs/flux`, `src/flux/sampling.py` (`denoise`: the same
#   Euler loop with `img = img + (t_prev - t_curr) * pred`).
# - Liu, Gong, Liu, *Flow Straight and Fast* (rectified flow), ICLR 2023; Lipman et al.,
#   *Flow Matching for Generative Modeling*, ICLR 2023.
# - Ho & Salimans, *Classifier-Free Diffusion Guidance* (2022); Meng et al., *On Distillation
#   of Guided Diffusion Models*, CVPR 2023 (guidance distillation).
# - Black Forest Labs, *FLUX.1 Kontext*, arXiv:2506.15742 (2025).

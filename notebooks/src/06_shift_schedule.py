# %% [markdown]
# # 06 · The shift schedule: from image size to noise levels
#
# Which noise levels σ does Kontext visit, and why does the list depend on the image size?
# This notebook rebuilds step 5 of `FluxKontextPipeline.__call__` ("Prepare timesteps":
# `calculate_shift` and `FlowMatchEulerDiscreteScheduler.set_timesteps`) and the
# `scheduler.step` call inside its denoising loop. In `00_overview`'s diagram it is the
# `sigmas` box of the noise lane and the loop arrow *x += (σ_next − σ)·v*. At the end we
# turn to training: how a LoRA run draws its noise levels, and how that differs from
# sampling.
#
# ## What you will learn
# - build the pipeline's sigmas from scratch (`linspace(1, 1/N, N)`, the exponential time
#   shift, a final 0) and the timesteps `1000·σ`, equal to `set_timesteps` for all 17
#   preferred Kontext resolutions and for small sizes
# - compute the shift `mu` from the number of **target** tokens, and show on a real
#   pipeline run that the context image's tokens do not count
# - read the shift as a translation by `mu` in logit space, the same as a static shift by
#   e<sup>mu</sup> ≈ 3.16 at 1024²
# - rebuild the Euler step `x_next = x + (σ_next − σ)·v` and check it against
#   `scheduler.step` and against every step of a pipeline run
# - rebuild the training densities (uniform, logit-normal, mode) and the SD3 loss
#   weightings, and compare where training and sampling spend their noise levels
#
# ## Prerequisites
# - `00_overview` (the whole machine) and `04_packing` (one token per 16×16 pixels:
#   a 1024² image is 64 × 64 = 4096 target tokens)
# - a little probability: a density, its histogram, a quantile

# %%
import kontext_teach as kt

device = kt.setup()  # first: it silences the libraries before diffusers' Flux pipelines are imported

import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS, calculate_shift
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
from PIL import Image

from kontext_teach import schedule as sched
from kontext_teach.training import timestep_sampling as ts
from kontext_teach.anatomy.full_size import full_size_scheduler
from kontext_teach.lab.harness import figure_png
from kontext_teach.preprocessing import observe_pipeline_sizes

# %% [markdown]
# ## Theory
#
# **Rectified flow.** Kontext, like FLUX.1, mixes a clean latent x<sub>0</sub> with Gaussian
# noise ε along a straight line:
#
# x<sub>σ</sub> = (1 − σ)·x<sub>0</sub> + σ·ε,  σ ∈ [0, 1].
#
# σ = 1 is pure noise, σ = 0 the clean latent. Along that line the velocity
# dx<sub>σ</sub>/dσ = ε − x<sub>0</sub> is the same at every σ, and it is what the
# transformer is trained to predict (a velocity, not the noise). Sampling starts from noise at
# σ = 1 and walks to σ = 0 with Euler steps:
#
# x<sub>next</sub> = x + (σ<sub>next</sub> − σ)·v,  with dt = σ<sub>next</sub> − σ < 0.
#
# **Which σ to visit.** With N steps the pipeline starts from N evenly spaced levels,
# `linspace(1, 1/N, N)`, pushes them towards 1 with the *exponential time shift*
#
# σ' = e<sup>μ</sup> / (e<sup>μ</sup> + (1/σ − 1)),
#
# and appends σ = 0, where the last step lands. Why push towards noise? The same σ destroys
# less of a large image: many more noisy pixels observe the same coarse content, and
# averaging them recovers it (the noise of an average of n pixels shrinks like 1/√n). So a
# large image keeps its layout visible down to higher σ, its coarse decisions are made at
# higher σ, and it needs more of its steps there (SD3 paper, section 5.3, "resolution-dependent
# shifting of timestep schedules"). How far to push is set by μ, linear in the number n of
# target tokens:
#
# μ(n) = 0.5 + (1.15 − 0.5)·(n − 256)/(4096 − 256):  0.5 at 256 tokens (256²), 1.15 at
# 4096 (1024²), and *not* clamped beyond.
#
# **The shift in logit space.** Write logit(σ) = log(σ/(1 − σ)). The shift is simply
#
# logit(σ') = logit(σ) + μ,
#
# a translation by μ. Equivalently σ' = sσ/(1 + (s − 1)σ) with s = e<sup>μ</sup>: the
# *static* shift that the scheduler applies when dynamic shifting is off, with s ≈ 3.16 at
# 1024². With `use_dynamic_shifting=True` (FLUX's config) the config's `shift=3.0` is not
# used at all.
#
# **Timesteps.** `timesteps = 1000·σ`; the pipeline passes `timestep / 1000`, so the
# transformer receives σ itself and its time embedding multiplies it by 1000 again. The
# 1000 is a scale (`num_train_timesteps`), not a number of steps.
#
# > **Common misreadings.** *"x<sub>next</sub> = x + dt·v with dt from
# > `scheduler.get_timestep_spacing()`"*: there is no such method; dt = σ<sub>next</sub> − σ,
# > read from the shifted, unevenly spaced sigmas, different at every step. *"A linear or
# > cosine noise schedule with 50 to 1000 timesteps"*: the noising is the straight line
# > above with a resolution-dependent exponential shift; 1000 is the timestep scale, and runs
# > use 28 steps (diffusers' default) or 30 (BFL's `cli_kontext.py`). *"The model predicts
# > noise"*: it predicts the velocity ε − x<sub>0</sub>.

# %% [markdown]
# ## Practice
#
# ### 1. The machine first: the scheduler's answer for 1024²
#
# This is what the pipeline does for a 1024×1024 output with 28 steps: count the target
# tokens, compute μ with diffusers' `calculate_shift`, and hand the scheduler
# `linspace(1, 1/28, 28)` together with μ. The scheduler is FLUX.1-Kontext-dev's (the
# miniature uses the same config).

# %%
scheduler = full_size_scheduler()
config = scheduler.config
print({key: config[key] for key in ("use_dynamic_shifting", "base_image_seq_len", "max_image_seq_len",
                                    "base_shift", "max_shift", "shift", "num_train_timesteps")})

num_steps, height, width = 28, 1024, 1024
tokens = (height // 16) * (width // 16)
mu = calculate_shift(tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu)

print(f"{tokens} target tokens -> mu = {mu:.4f}")
print("sigmas   ", [round(s, 4) for s in scheduler.sigmas[:4].tolist()], "...",
      [round(s, 4) for s in scheduler.sigmas[-3:].tolist()], f"({len(scheduler.sigmas)} values)")
print("timesteps", [round(t, 2) for t in scheduler.timesteps[:4].tolist()], "...",
      [round(t, 2) for t in scheduler.timesteps[-2:].tolist()], f"({len(scheduler.timesteps)} values)")

# %% [markdown]
# 29 sigmas for 28 steps: step *i* goes from `sigmas[i]` to `sigmas[i + 1]`, and the last
# one lands on 0. Now we take it apart.
#
# ### 2. μ from the number of target tokens
#
# `sched.shift_mu` is the straight line through (256, 0.5) and (4096, 1.15);
# `sched.target_tokens` counts one token per 16×16 pixels (8× VAE, then 2×2 packing).
# The 17 resolutions the pipeline snaps condition images to all have about 4096 tokens;
# some have a few more, and their μ goes slightly *above* `max_shift`, because nothing
# clamps it.

# %%
small_sizes = [(64, 64), (96, 64), (256, 256), (512, 512), (768, 512), (2048, 2048)]  # (width, height)
sizes = list(PREFERRED_KONTEXT_RESOLUTIONS) + small_sizes
size_tokens = [sched.target_tokens(h, w) for w, h in sizes]

print(f"{'width x height':>15}{'tokens':>8}{'mu':>9}{'e^mu':>8}")
for (w, h), n in zip(sizes, size_tokens):
    if (w, h) in [(672, 1568), (800, 1328), (1024, 1024)] or (w, h) in small_sizes:
        print(f"{f'{w} x {h}':>15}{n:>8}{sched.shift_mu(n):>9.4f}{math.exp(sched.shift_mu(n)):>8.3f}")

ours = torch.tensor([sched.shift_mu(n) for n in size_tokens], dtype=torch.float64)
theirs = torch.tensor([calculate_shift(n) for n in size_tokens], dtype=torch.float64)
_ = kt.compare(f"mu, {len(sizes)} sizes", ours, theirs, atol=1e-12, rtol=0)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
preferred = size_tokens[:len(PREFERRED_KONTEXT_RESOLUTIONS)]
labelled = [{(2048, 2048): (-60, -14)},  # label offsets in points, per panel
            {(64, 64): (-6, 10), (256, 256): (6, -12), (512, 512): (6, -12), (768, 512): (6, -12)}]
for ax, right_end, labels in zip(axes, (17000, 4500), labelled):
    line = np.linspace(1, right_end, 200)
    ax.plot(line, [sched.shift_mu(int(n)) for n in line], color="grey", label="mu(n), not clamped")
    ax.scatter(preferred, [sched.shift_mu(n) for n in preferred], color="#555555", zorder=3,
               label="the 17 preferred resolutions")
    for (w, h), n in zip(small_sizes, size_tokens[len(PREFERRED_KONTEXT_RESOLUTIONS):]):
        if n <= right_end:
            ax.scatter([n], [sched.shift_mu(n)], color="#e66101", zorder=3)
            if (w, h) in labels:
                ax.annotate(f"{w}x{h}", (n, sched.shift_mu(n)), textcoords="offset points",
                            xytext=labels[(w, h)], fontsize=8)
    ax.axhline(1.15, ls=":", color="grey")
    ax.set(xlabel="target tokens n = (H/16)(W/16)", ylabel="mu")
axes[0].set_title("mu is linear in the target tokens, and not clamped")
axes[1].set_title("zoom: up to 1 MP (max_shift 1.15 dotted)")
axes[0].legend(fontsize=8, loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 3. Linear sigmas, the time shift, a final zero
#
# Three lines, one per idea. `atol=0, rtol=0` asks for bit-identical results: the
# rebuild does the same float32 arithmetic as the scheduler.

# %%
base = sched.base_sigmas(num_steps)  # [28] linspace(1, 1/28, 28), float32
shifted = sched.time_shift(mu, base)  # [28] e^mu / (e^mu + (1/sigma - 1))
sigmas = torch.cat([torch.from_numpy(shifted), torch.zeros(1)])  # [29] the last step lands on 0
timesteps = sched.timesteps_from_sigmas(sigmas)  # [28] 1000 * sigma

_ = kt.compare("sigmas, 1024², 28 steps", sigmas, scheduler.sigmas, atol=0, rtol=0)
_ = kt.compare("timesteps, 1024², 28 steps", timesteps, scheduler.timesteps, atol=0, rtol=0)

# %% [markdown]
# `sched.shifted_sigmas(num_steps, tokens)` packs those three lines. Check it for every size
# above (the 17 preferred resolutions and the small ones) and for several step counts, each
# against the scheduler set up exactly as the pipeline sets it up:

# %%
def scheduler_sigmas(steps: int, n: int) -> torch.Tensor:
    reference = full_size_scheduler()
    reference.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=calculate_shift(n))
    return reference.sigmas


for steps in (4, 28, 30):
    ours = torch.stack([sched.shifted_sigmas(steps, n) for n in size_tokens])  # [23, steps + 1]
    theirs = torch.stack([scheduler_sigmas(steps, n) for n in size_tokens])
    _ = kt.compare(f"{len(sizes)} sizes, {steps} steps", ours, theirs, atol=0, rtol=0)

# %% [markdown]
# **Picture.** Left: σ per step for other sizes (colours) and all 17 preferred resolutions
# (grey, almost on top of each other). Right: the step sizes |dt|. Without the shift every
# step would be 1/28 ≈ 0.036. Every size is shifted towards noise, since μ > 0 even for one
# token, but by how much depends on the size: a 1024² image (e<sup>μ</sup> ≈ 3.16) takes
# steps of about 0.012 at high noise, where the layout is decided, and a few big ones at the
# end; a 64² image (e<sup>μ</sup> ≈ 1.58) stays much closer to even steps.

# %%
size_colours = {(64, 64): "#1b9e77", (256, 256): "#d95f02", (512, 512): "#7570b3", (1024, 1024): "#555555",
                (2048, 2048): "#e7298a"}
colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"]  # for the density plots further down
steps_axis = np.arange(num_steps + 1)
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for w, h in PREFERRED_KONTEXT_RESOLUTIONS:
    axes[0].plot(steps_axis, sched.shifted_sigmas(num_steps, sched.target_tokens(h, w)), color="grey", lw=0.8)
axes[0].plot([], [], color="grey", label="17 preferred (~1 MP)")
axes[0].plot(steps_axis, np.append(base, 0), "k--", lw=1, label="unshifted")
for (w, h), colour in [(size, c) for size, c in size_colours.items() if size != (1024, 1024)]:
    axes[0].plot(steps_axis, sched.shifted_sigmas(num_steps, sched.target_tokens(h, w)), color=colour,
                 label=f"{w}x{h}")
axes[0].set(xlabel="step", ylabel="sigma", title="sigmas, 28 steps")
axes[0].legend(fontsize=8)
width_bar = 0.18
for k, (w, h) in enumerate([(64, 64), (256, 256), (1024, 1024)]):
    colour = size_colours[(w, h)]
    dt = -torch.diff(sched.shifted_sigmas(num_steps, sched.target_tokens(h, w)))
    axes[1].bar(np.arange(num_steps) + (k - 1) * width_bar, dt, width=width_bar, color=colour, label=f"{w}x{h}")
axes[1].axhline(1 / num_steps, color="k", ls="--", lw=1, label="unshifted 1/28")
axes[1].set(xlabel="step", ylabel="|dt| = sigma - sigma_next", title="step sizes")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

preferred_curves = torch.stack([sched.shifted_sigmas(num_steps, n) for n in preferred])
spread = (preferred_curves.max(0).values - preferred_curves.min(0).values).max().item()
print(f"largest sigma difference between any two preferred resolutions: {spread:.4f}")

# %% [markdown]
# The 17 preferred resolutions share one schedule to within 0.005 in σ: for Kontext's
# own sizes the shift is, in practice, a constant e<sup>1.15</sup>. It matters when you
# generate at other sizes, and when you train at 512² but sample at 1024².
#
# ### 4. The shift is a translation in logit space
#
# On a logit axis the unshifted and shifted sigmas are parallel curves, μ apart. The same
# numbers come out of the scheduler's *static* shift with `shift = e^mu` and dynamic
# shifting off.

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
inner = np.arange(1, num_steps)  # skip step 0: sigma = 1 has logit +inf
ax.plot(inner, torch.logit(torch.from_numpy(base[1:]).double()), "k--", label="unshifted")
for w, h in [(256, 256), (1024, 1024), (2048, 2048)]:
    n, colour = sched.target_tokens(h, w), size_colours[(w, h)]
    ax.plot(inner, torch.logit(sched.shifted_sigmas(num_steps, n)[1:-1].double()), color=colour,
            label=f"{w}x{h}: + mu = {sched.shift_mu(n):.3f}")
ax.set(xlabel="step", ylabel="logit(sigma)", title="the time shift adds mu in logit space")
ax.legend(fontsize=8)
plt.show()

# %%
# sigma = 1 is the fixed point of the shift (logit +inf); compare the other 27 levels
logit_gap = torch.logit(torch.from_numpy(shifted[1:]).double()) - torch.logit(torch.from_numpy(base[1:]).double())
_ = kt.compare("logit(shifted) - logit(base)", logit_gap, torch.full_like(logit_gap, mu), atol=1e-5, rtol=0)

static = FlowMatchEulerDiscreteScheduler(shift=math.exp(mu), use_dynamic_shifting=False)
static.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps))
_ = kt.compare("static shift e^mu", sigmas, static.sigmas, atol=1e-6, rtol=0)
print(f"e^mu at 1024² = {math.exp(mu):.4f}; the config's shift = {config.shift} is unused with dynamic shifting")

# %% [markdown]
# ### 5. A pitfall: `set_timesteps(N, mu=...)` on its own
#
# If you write your own sampling loop, call the scheduler as the pipeline does. Without
# `sigmas`, `set_timesteps` starts from `linspace(1, 1/1000, N)` (its training grid runs
# down to σ = 0.001), not from `linspace(1, 1/N, N)`: a different schedule whose last
# step is tiny.

# %%
alone = full_size_scheduler()
alone.set_timesteps(num_steps, mu=mu)
print("pipeline's last sigmas      ", [round(s, 4) for s in sigmas[-4:].tolist()])
print("set_timesteps(28, mu) alone ", [round(s, 4) for s in alone.sigmas[-4:].tolist()])
print(f"largest difference: {(alone.sigmas - sigmas).abs().max().item():.4f}")

# %% [markdown]
# ### 6. Context tokens do not count: a real pipeline run
#
# In Kontext the transformer sees the target tokens *and* the context tokens of the
# condition image. The pipeline computes μ from `latents.shape[1]`, the target tokens only
# (BFL's `cli_kontext.py` does the same with `inp["img"].shape[1]`).
# `sched.trace_sampling` runs the miniature pipeline once and records, with a forward hook
# on the transformer, what goes in and out at every step. Here the output is 64×96 pixels
# (24 tokens) and the condition image 256×256 (256 tokens).

# %%
pipe = kt.load_pipeline()
condition = Image.new("RGB", (256, 256), (200, 60, 40))
trace = sched.trace_sampling(pipe, image=condition, prompt="make the square blue", height=64, width=96,
                             max_area=64 * 96, _auto_resize=False, num_inference_steps=4, guidance_scale=2.5,
                             generator=torch.Generator().manual_seed(0))
n_target, n_context = trace.target_tokens, trace.context_tokens
print(f"target tokens {n_target}, context tokens {n_context}, transformer input {n_target + n_context} image tokens")
print(f"mu from target tokens {sched.shift_mu(n_target):.4f}; "
      f"it would be {sched.shift_mu(n_target + n_context):.4f} if the context counted")

_ = kt.compare("pipeline sigmas (target)", trace.sigmas, sched.shifted_sigmas(4, n_target), atol=0, rtol=0)
wrong = sched.shifted_sigmas(4, n_target + n_context)
print(f"the schedule with context tokens would differ by up to {(wrong - trace.sigmas).abs().max().item():.4f}")
_ = kt.compare("timestep the model gets", trace.model_timesteps, trace.sigmas[:-1], atol=1e-6, rtol=0)

# %% [markdown]
# The last line: what reaches the transformer is `timestep / 1000`, i.e. σ itself (up to
# float32 rounding of ×1000 then ÷1000).
#
# ### 7. The Euler step
#
# `sched.euler_step` is one line, plus the dtype handling of `scheduler.step`: the sample
# is upcast to float32, dt = σ<sub>next</sub> − σ is a float32 scalar, and the result is
# cast back to the velocity's dtype. (One subtlety: dt·v is a float32 scalar times a
# tensor, so in bf16 the product stays bf16; only the sum is float32.)
#
# ```python
# dt = sigma_next - sigma                  # negative
# x_next = (x.float() + dt * v).to(v.dtype)
# ```
#
# First check: replay every step of the pipeline run above. Each recorded input plus
# dt × recorded velocity must give the next recorded input, and the last step the
# pipeline's output.

# %%
replayed = torch.stack([sched.euler_step(trace.latents[k], trace.velocities[k], trace.sigmas[k], trace.sigmas[k + 1])
                        for k in range(len(trace.velocities))])  # [4, B, 24, 64]
_ = kt.compare("Euler steps of the run", replayed, torch.stack(trace.latents[1:]), atol=0, rtol=0)

# %% [markdown]
# Second check: all 28 steps of the 1024² schedule against `scheduler.step`, with random
# velocities on a small batch of shape [2, 24, 64], in float32 and in bfloat16.

# %%
for dtype in (torch.float32, torch.bfloat16):
    generator = torch.Generator().manual_seed(0)
    reference = full_size_scheduler()
    reference.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu)
    ours = theirs = torch.randn(2, 24, 64, generator=generator).to(dtype)  # [B, L, 64]
    for k, t in enumerate(reference.timesteps):
        velocity = torch.randn(2, 24, 64, generator=generator).to(dtype)
        theirs = reference.step(velocity, t, theirs, return_dict=False)[0]
        ours = sched.euler_step(ours, velocity, sigmas[k], sigmas[k + 1])
    _ = kt.compare(f"28 Euler steps, {str(dtype)[6:]}", ours, theirs, atol=0, rtol=0)

# %% [markdown]
# ### 8. Explore: from resolution to schedule
#
# `sched.schedule_for_size(height, width, num_steps)` gathers tokens, μ, e<sup>μ</sup>,
# sigmas, timesteps and dt, and `sched.format_schedule_table` prints them:

# %%
print(sched.format_schedule_table(sched.schedule_for_size(512, 768, 28)))

# %% [markdown]
# `sched.show_schedule` draws the same table with the curves. Both are tested; the widget
# below only calls `sched.draw_schedule`. One plain call first, so the picture is here
# without a running kernel:

# %%
sched.show_schedule(1024, 1024, 28)

# %%
schedule_picture = widgets.Image(format="png")  # the figure goes into the widget, not into the cell's output


def show_schedule_in_widget(height=1024, width=1024, num_steps=28):
    schedule_picture.value = figure_png(sched.draw_schedule(sched.schedule_for_size(height, width, num_steps)))


size_slider = dict(min=16, max=2048, step=16, style={"description_width": "initial"})  # full labels
controls = widgets.interactive(show_schedule_in_widget, height=widgets.IntSlider(value=1024, **size_slider),
                               width=widgets.IntSlider(value=1024, **size_slider),
                               num_steps=widgets.IntSlider(value=28, min=1, max=50,
                                                           style={"description_width": "initial"}))
widgets.VBox([controls, schedule_picture])

# %% [markdown]
# Try 512×512 against 1024×1024, or 28 against 30 steps. Sizes that are not multiples of 16
# never reach the schedule from the pipeline: it first rescales height × width to `max_area`
# (1024² by default) and then floors both sides to 16. `target_tokens` refuses them and names
# the size the pipeline would really make; below, the pipeline itself, asked for the same size
# (`observe_pipeline_sizes` from notebook 01 reads its target tokens and stops there):

# %%
try:
    sched.target_tokens(1000, 1000)
except ValueError as error:
    print("ValueError:", error)
made = observe_pipeline_sizes(pipe, Image.new("RGB", (64, 64)), height=1000, width=1000, _auto_resize=False).output
print(f"the pipeline, asked for height=1000, width=1000: height={made.height}, width={made.width}, "
      f"{sched.target_tokens(made.height, made.width)} target tokens")

# %% [markdown]
# ### 9. Training: where a LoRA run draws its noise levels
#
# Training does not walk a schedule. Each sample of a batch gets one random σ, is noised to
# x<sub>σ</sub> = (1 − σ)·x<sub>0</sub> + σ·ε, and the loss compares the prediction with
# ε − x<sub>0</sub>. diffusers' `train_dreambooth_lora_flux_kontext.py` draws σ in two
# steps:
#
# 1. `u = compute_density_for_timestep_sampling(weighting_scheme, batch_size, ...)`, u in
#    [0, 1), from one of three densities (SD3 paper, section 3.1): **uniform** (the
#    script's default, `"none"`), **logit-normal** (logit(u) ~ N(0, 1): most draws near
#    the middle), or **mode** with scale 1.29 (the map
#    f(u) = 1 − u − s·(cos²(πu/2) − 1 + u) of a uniform draw, also peaked in the middle but
#    with heavier tails);
# 2. `indices = (u * 1000).long()` into the scheduler's 1000 training sigmas, which run
#    down from 1 to 0.001 and are **not** shifted by resolution: σ = 1 − ⌊1000u⌋/1000.
#
# `ts.sample_u` makes the same random calls as diffusers, so the same generator seed gives
# the same samples, bit for bit:

# %%
batch = 200_000
samples = {}
for density in ts.DENSITIES:
    samples[density] = ts.sample_u(density, batch, generator=torch.Generator().manual_seed(0))
    theirs = compute_density_for_timestep_sampling(ts.DIFFUSERS_DENSITY_NAMES[density], batch, logit_mean=0.0,
                                                   logit_std=1.0, mode_scale=1.29,
                                                   generator=torch.Generator().manual_seed(0))
    _ = kt.compare(f"u ~ {density}", samples[density], theirs, atol=0, rtol=0)

# %% [markdown]
# Beside the samples, `ts.density_pdf`, `ts.density_cdf` and `ts.density_quantile` give each
# density in closed form (the mode map is inverted by bisection). The quantiles of the
# 200,000 diffusers-identical samples agree with the exact ones:

# %%
levels = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
print(f"{'density':<14}" + "".join(f"{'q' + str(q):>16}" for q in levels.tolist()))
for density in ts.DENSITIES:
    empirical = torch.quantile(samples[density].double(), levels)
    exact = ts.density_quantile(density, levels)
    print(f"{density:<14}" + "".join(f"{e:>9.3f} ({x:.3f})" for e, x in zip(empirical.tolist(), exact.tolist())))
    assert torch.allclose(empirical, exact, atol=5e-3)
print("(sampled, exact in brackets)")

# %% [markdown]
# **Picture.** Histograms of the samples with the exact densities on top. All three are
# symmetric about ½, so σ = 1 − u has the same density as u. The fourth panel puts them
# next to *sampling* at 1024²: where the 28 shifted sigmas sit (ticks), and the density of
# time-shifted uniform draws, which is where a sampler at this size spends its steps.

# %%
grid = torch.linspace(0.001, 0.999, 500, dtype=torch.float64)
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), sharey=True)
for ax, density, colour in zip(axes, ts.DENSITIES, colours):
    ax.hist(samples[density].numpy(), bins=60, range=(0, 1), density=True, color=colour, alpha=0.45, label="samples")
    ax.plot(grid, ts.density_pdf(density, grid), color="k", lw=1.2, label="pdf")
    ax.set(title=density if density != "mode" else "mode, scale 1.29", xlabel="u (and sigma = 1 - u)")
axes[0].set_ylabel("density")
axes[0].legend(fontsize=8)
sampling = torch.from_numpy(sched.time_shift(mu, np.random.default_rng(0).uniform(0.001, 1, batch)))
axes[3].hist(sampling.numpy(), bins=60, range=(0, 1), density=True, color=colours[3], alpha=0.45,
             label="shifted uniform")
axes[3].plot(grid, ts.density_pdf("logit_normal", grid), color="k", lw=1, ls="--", label="logit-normal")
axes[3].plot(sigmas[:-1], np.zeros(num_steps), "|", color="k", ms=14, label="the 28 sigmas")
axes[3].set(title="sampling at 1024², 28 steps", xlabel="sigma", ylim=(0, 4.2))
axes[3].legend(fontsize=8, loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# A number that matters for LoRA training: how much of each is spent at high noise, where
# the layout of the edit is decided?

# %%
threshold = 0.8
print(f"share of noise levels with sigma > {threshold}:")
for density in ts.DENSITIES:
    share = ts.density_cdf(density, torch.tensor(1 - threshold)).item()  # sigma > 0.8 <=> u < 0.2
    print(f"  training, {density:<13} {share:6.1%}")
print(f"  sampling, 1024², 28 steps {(sigmas[:-1] > threshold).float().mean().item():6.1%}")

# %% [markdown]
# The sampler at 1024² spends almost half of its steps above σ = 0.8, while a
# logit-normal training run puts about 8 % of its draws there and a uniform one 20 %. The
# diffusers script does not shift its training sigmas by resolution (some trainers can,
# e.g. OneTrainer's dynamic timestep shifting). When a LoRA learns textures but not the
# large-scale change of an edit, this mismatch is one thing to look at.
#
# **Mind the sign of `--logit_mean`.** In the SD3 paper t is the noise level, so a positive
# logit-normal mean means more noise. In the diffusers script σ ≈ 1 − u: a positive
# `--logit_mean` means *less* noise. To train more at high noise, make it negative:

# %%
for logit_mean in (-1.0, 0.0, 1.0):
    u_draws = ts.sample_u("logit_normal", 100_000, logit_mean=logit_mean, generator=torch.Generator().manual_seed(0))
    print(f"--logit_mean {logit_mean:+.1f}: median training sigma {ts.sigmas_from_u(u_draws).median().item():.3f}")

# %% [markdown]
#
# **From u to σ.** `ts.sigmas_from_u` is the script's indexing, rebuilt: it equals looking
# up `scheduler.sigmas` at `(u * 1000).long()` on a fresh scheduler. `ts.noisy_latents`
# then mixes x<sub>0</sub> and ε, as the public `scheduler.scale_noise` does.

# %%
training_scheduler = full_size_scheduler()  # fresh: the 1000 unshifted training sigmas
u = samples["logit_normal"][:8]
indices = (u * training_scheduler.config.num_train_timesteps).long()
_ = kt.compare("sigmas_from_u", ts.sigmas_from_u(u), training_scheduler.sigmas[indices], atol=0, rtol=0)

generator = torch.Generator().manual_seed(1)
x0, noise = torch.randn(8, 16, 8, 12, generator=generator), torch.randn(8, 16, 8, 12, generator=generator)
_ = kt.compare("noisy_latents", ts.noisy_latents(x0, noise, ts.sigmas_from_u(u)),
               training_scheduler.scale_noise(x0, training_scheduler.timesteps[indices], noise), atol=0, rtol=0)
print("u    ", [round(v, 4) for v in u.tolist()])
print("sigma", [round(v, 4) for v in ts.sigmas_from_u(u).tolist()])

# %% [markdown]
# **Loss weighting.** The other two SD3 schemes keep uniform sampling and weight each
# sample's loss instead: `sigma_sqrt` by σ<sup>−2</sup>, `cosmap` by
# 2 / (π(1 − 2σ + 2σ²)). Weighting uniform draws by a density has the same expected loss as
# drawing from that density, and the cosmap weight is one (it integrates to 1). The
# logit-normal and mode schemes weight by 1.

# %%
train_sigmas = ts.sigmas_from_u(samples["uniform"][:16]).reshape(16, 1, 1, 1)  # [B, 1, 1, 1], as in the script
for weighting in ts.LOSS_WEIGHTINGS:
    _ = kt.compare(f"weighting {weighting}", ts.loss_weighting(weighting, train_sigmas),
                   compute_loss_weighting_for_sd3(weighting, train_sigmas), atol=0, rtol=0)
cosmap_area = torch.trapezoid(ts.loss_weighting("cosmap", grid), grid).item()
print(f"integral of the cosmap weight over (0.001, 0.999): {cosmap_area:.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for weighting, colour in zip(ts.LOSS_WEIGHTINGS, colours):
    axes[0 if weighting != "sigma_sqrt" else 1].plot(grid, ts.loss_weighting(weighting, grid), color=colour,
                                                    label=weighting)
axes[0].plot(grid, ts.density_pdf("logit_normal", grid), "k--", lw=1, label="logit-normal pdf")
axes[0].set(xlabel="sigma", ylabel="weight", title="none, cosmap (and the logit-normal pdf)")
axes[1].set(xlabel="sigma", ylabel="weight (log scale)", yscale="log", title="sigma_sqrt: sigma^-2")
for ax in axes:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **A trap in the names.** diffusers treats any name it does not know as uniform, silently:
# a typo such as `"logit-normal"` trains with uniform σ. `ts.sample_u` refuses it.

# %%
typo = compute_density_for_timestep_sampling("logit-normal", 8, generator=torch.Generator().manual_seed(0))
uniform = ts.sample_u("uniform", 8, generator=torch.Generator().manual_seed(0))
print("diffusers with 'logit-normal' returns uniform samples:", torch.equal(typo, uniform))
try:
    ts.sample_u("logit-normal", 8)
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# ## Summary
# - The pipeline's schedule is `linspace(1, 1/N, N)`, shifted by
#   σ' = e<sup>μ</sup>/(e<sup>μ</sup> + 1/σ − 1), with a final 0 appended; timesteps are
#   1000·σ and the transformer receives σ. Our rebuild is bit-identical to `set_timesteps`
#   for the 17 preferred resolutions and small sizes.
# - μ is linear in the number of **target** tokens (0.5 at 256, 1.15 at 4096, not clamped);
#   context tokens do not count, as the traced pipeline run shows.
# - The shift adds μ in logit space: a static shift by e<sup>μ</sup>, about 3.16 at 1024².
#   Large images spend more steps at high noise; Kontext's 17 sizes share one schedule.
# - An Euler step is `x + (σ_next − σ)·v` with the sample in float32; it reproduces
#   `scheduler.step` and every step of a pipeline run exactly.
# - Training draws u from a uniform, logit-normal (0, 1) or mode (1.29) density and takes
#   σ ≈ 1 − u on a 1000-point grid, unshifted; `sigma_sqrt` and `cosmap` reweight the loss
#   instead. Sampling at 1024² spends far more of its steps at high σ than training does.
#
# ## Exercises
# 1. **Invert the time shift.** Write `inverse_time_shift(mu, shifted)` that returns the σ
#    that `time_shift(mu, σ)` maps to `shifted`, and check that it turns the 28 shifted
#    sigmas of 1024² back into `linspace(1, 1/28, 28)`. Hint: logit space. Bonus: handle
#    the `exponent` argument too. (Solution:
#    `kontext_teach.solutions.s06_shift_schedule.inverse_time_shift`.)
# 2. **BFL's 30 steps.** BFL's `get_schedule` (`src/flux/sampling.py`) shifts
#    `torch.linspace(1, 0, N + 1)` with the same μ line, and `cli_kontext.py` runs 30 steps.
#    Rebuild it, check that it equals the diffusers scheduler with 30 steps, and compare the
#    largest step |dt| of 28 and 30 steps at 1024². (Solution: `bfl_schedule`,
#    `largest_step`.)
# 3. **μ is not clamped.** What is the shift e<sup>μ</sup> for a 2048×2048 output? Write
#    `smallest_square_side_with_shift(min_shift)`, the smallest square side (a multiple of
#    16) whose shift reaches `min_shift`, and find it for shifts 2 and 10. (Solution:
#    `shift_for_size`, `smallest_square_side_with_shift`.)
#
# ## References
# - diffusers `schedulers/scheduling_flow_match_euler_discrete.py`:
#   `FlowMatchEulerDiscreteScheduler` (`set_timesteps`, `time_shift`, `step`,
#   `scale_noise`).
# - diffusers `pipelines/flux/pipeline_flux_kontext.py`: `calculate_shift`,
#   `PREFERRED_KONTEXT_RESOLUTIONS`, `FluxKontextPipeline.__call__` (step 5 "Prepare
#   timesteps" and the denoising loop).
# - diffusers `training_utils.py`: `compute_density_for_timestep_sampling`,
#   `compute_loss_weighting_for_sd3`; `examples/dreambooth/train_dreambooth_lora_flux_kontext.py`
#   (`--weighting_scheme`, `--logit_mean`, `--logit_std`, `--mode_scale`, `get_sigmas`).
# - Black Forest Labs, `black-forest-labs/flux`: `src/flux/sampling.py` (`time_shift`,
#   `get_lin_function`, `get_schedule`, `denoise`) and `src/flux/cli_kontext.py`
#   (30 steps, guidance 2.5).
# - OneTrainer pull request #653, "Timestep shifting" (the resolution shift applied to
#   training sigmas): https://github.com/Nerogar/OneTrainer/pull/653
# - Esser et al., *Scaling Rectified Flow Transformers for High-Resolution Image Synthesis*
#   (SD3), ICML 2024, arXiv:2403.03206: section 3.1 (logit-normal, mode and cosmap
#   sampling) and section 5.3 (resolution-dependent shifting of timestep schedules).
# - Liu et al., *Flow Straight and Fast* (rectified flow), ICLR 2023, arXiv:2209.03003;
#   Lipman et al., *Flow Matching for Generative Modeling*, ICLR 2023, arXiv:2210.02747.
# - Black Forest Labs, *FLUX.1 Kontext: Flow Matching for In-Context Image Generation and
#   Editing in Latent Space*, arXiv:2506.15742 (2025).

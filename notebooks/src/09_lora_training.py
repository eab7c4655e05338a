# %% [markdown]
# # 09 · Teaching Kontext a new edit with a LoRA
#
# The last step of the series is the one practitioners take most: training a LoRA. We teach
# the embedded miniature an edit it has never seen (turning the picture upside down) with
# `kontext_teach`'s trainer, which does what diffusers' `train_dreambooth_lora_flux_kontext.py`
# does, written to be read. The same call trains a LoRA of the real FLUX.1-Kontext-dev on a GPU.
#
# ## What you will learn
# - what a LoRA is and which layers of FLUX it usually goes into
# - the Kontext training objective: noisy target tokens, clean context tokens, a velocity target
# - why latents and text embeddings are cached, and how a run resumes after an interruption
# - how to measure that a LoRA learned the new edit and kept the old ones (replay)
# - how to save a LoRA that a stock diffusers pipeline loads, and what the real model needs
#
# ## Prerequisites
# - notebooks 03–08, especially 06 (training densities) and 08 (sampling)

# %%
import pathlib
import tempfile

import matplotlib.pyplot as plt
import torch

import kontext_teach as kt
from kontext_teach.anatomy import full_size
from kontext_teach.toy import edit_metric, toy_world
from kontext_teach.training.edit_pairs import load_pair_folder, save_pair_folder
from kontext_teach.training.lora_training import TrainConfig, cache_pairs, checkpoints, loss_by_sigma, train_lora
from kontext_teach.solutions import s09_lora_training as solutions

device = kt.setup()
on_gpu = torch.cuda.is_available()

# %% [markdown]
# ## Theory
#
# **LoRA** (low-rank adaptation) freezes every weight W of the model and learns a small
# correction for some of its linear layers: W x + (α / r) · B A x, with A of shape r × in,
# B of shape out × r and a rank r of 4 to 64. B starts at zero, so training starts from the
# unchanged model. For FLUX's 3072-wide layers a rank-16 LoRA adds 98,304 parameters per
# layer instead of 9.4 million.
#
# **Where**: diffusers' Kontext script puts it in the attention projections of the image
# stream (`to_q`, `to_k`, `to_v`, `to_out.0` in both block kinds); ai-toolkit and others often
# add the text stream, the MLPs and the AdaLN modulation layers (`TrainConfig.targets`).
#
# **The objective** is the one the model was trained with. For a pair (condition image c,
# instruction, target image x₀): encode both images to latents (the VAE mode, shifted and
# scaled, notebook 03), draw a noise level σ (logit-normal, notebook 06) and noise n, and
# give the transformer [pack((1 − σ) x₀ + σ n); pack(c)] with ids (0, r, c) then (1, r, c).
# Keep its output for the target tokens and regress it onto the velocity n − x₀ (MSE).
# The guidance input is set to 1.0 during training (ai-toolkit and diffusers' examples).
#
# **Caching**: the VAE and the text encoders are frozen, so every pair is encoded once
# (`cache_pairs`); at full size that takes the 4.8 B-parameter T5 off the GPU for training.
#
# **Forgetting**: a LoRA trained only on the new edit also changes how the model does the
# old ones. Mixing old pairs into the training set (*replay*) is the usual remedy; a
# trigger phrase is another.

# %% [markdown]
# ## Practice
#
# ### The new edit, and what the model does with it now
#
# The toy world keeps one edit family away from the miniature's training:
# `flip_upside_down`. The base model has never seen it.

# %%
pipe = kt.load_pipeline()
size, tokens = 64, edit_metric.TEXT_LENGTH
new_heldout = toy_world.make_pairs("heldout", 16, families=["flip_upside_down"])
old_heldout = toy_world.make_pairs("heldout", 16, start=100)
print(sorted({p.instruction for p in toy_world.make_pairs("train", 30, families=["flip_upside_down"])}))

before_new = edit_metric.evaluate(pipe, new_heldout, steps=16, batch_size=16)
before_old = edit_metric.evaluate(pipe, old_heldout, steps=16, batch_size=16)
print(f"base model, new edit:  edit accuracy {before_new.row('model').edit_accuracy:.2f}")
print(f"base model, old edits: edit accuracy {before_old.row('model').edit_accuracy:.2f}")

# %% [markdown]
# ### The data
#
# The trainer reads a folder of images with a `pairs.jsonl` index (one line per pair:
# `source`, `target`, `instruction`) and checks everything before it starts: missing or
# unreadable files, sizes that differ or are not multiples of 16, empty instructions. Here
# we write toy pairs in that format: new-edit pairs, plus as many old-edit pairs for replay.

# %%
count = 512 if on_gpu else 128
new_train = toy_world.make_pairs("train", count, families=["flip_upside_down"])
old_train = toy_world.make_pairs("train", count, start=10_000)
workdir = pathlib.Path(tempfile.mkdtemp(prefix="kontext-lora-"))
folder = save_pair_folder(solutions.replay_mix(new_train, old_train, replay_fraction=0.5), workdir / "data")
pairs = load_pair_folder(folder)
print(f"{len(pairs)} pairs ({count} new, {count} replayed), e.g. {(folder / 'pairs.jsonl').read_text().splitlines()[0]}")

# %%
fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
for column, pair in enumerate(pairs[:4]):
    axes[0, column].imshow(pair.source)
    axes[1, column].imshow(pair.target)
    axes[0, column].set_title(pair.instruction, fontsize=7)
for ax in axes.flat:
    ax.axis("off")
plt.show()

# %% [markdown]
# ### Train
#
# On a GPU the run below takes a few minutes; on a CPU it is a short version that shows the
# mechanics (the loss falls, only LoRA weights change) rather than a finished LoRA.

# %%
config = TrainConfig(steps=1500 if on_gpu else 300, batch_size=32 if on_gpu else 8, learning_rate=1e-3, rank=16,
                     targets="all-linear", max_sequence_length=tokens, checkpoint_every=100, seed=0)
cache = cache_pairs(pipe, pairs, config.max_sequence_length)
base_weights = {name: p.detach().clone() for name, p in pipe.transformer.named_parameters()}
print(f"cached {len(cache)} pairs: target latents {list(cache[0].target_latents.shape)}, "
      f"T5 states {list(cache[0].prompt_embeds.shape)}, pooled {list(cache[0].pooled_prompt_embeds.shape)}")

# %%
# NBVAL_IGNORE_OUTPUT
result = train_lora(pipe, cache, config, workdir / "lora")  # progress bar: timings vary

# %%
losses = [entry["loss"] for entry in result.history]
tenth = max(1, len(losses) // 10)
first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
print(f"{len(losses)} steps; mean loss of the first {tenth}: {first:.2f}, of the last {tenth}: {last:.2f}")
assert last < first, "the loss should fall"

changed = [name for name, p in pipe.transformer.named_parameters()
           if name.replace(".base_layer", "") in base_weights
           and not torch.equal(p, base_weights[name.replace(".base_layer", "")])]
lora_names = [name for name, _ in pipe.transformer.named_parameters() if "lora_" in name]
print(f"{len(lora_names)} LoRA tensors trained, {len(changed)} base weights changed")
assert not changed

# %% [markdown]
# The loss of flow-matching training is noisy: each step sees other noise levels, and the
# loss depends strongly on σ. Binning the per-sample losses by σ shows where the model
# still has most to learn.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
window = max(1, len(losses) // 20)
smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
          for i in range(len(losses))]
left.plot(range(1, len(losses) + 1), losses, alpha=0.3, label="per step")
left.plot(range(1, len(losses) + 1), smooth, label=f"mean of {window}")
left.set_xlabel("step")
left.set_ylabel("loss")
left.legend(fontsize=8)
bins = loss_by_sigma(result.history, bins=10)
right.bar([centre for centre, _, _ in bins], [loss for _, loss, _ in bins], width=0.08)
right.set_xlabel("noise level σ of the sample")
right.set_ylabel("mean loss")
right.set_title("loss binned by timestep", fontsize=10)
plt.show()

# %% [markdown]
# ### Did it learn the edit, and keep the old ones?
#
# Turning a picture upside down moves every token to another row: a global rearrangement,
# like the mirror edit, which took the base model tens of thousands of examples to learn.
# The CPU run above sees 2,400: expect it not yet to flip, and to lose some of the old edits
# (300 steps at learning rate 1e-3 move every layer the LoRA touches; replay, half of each
# batch, limits how far). The GPU run sees 48,000 and is held to the targets in the cell
# after next.

# %%
after_new = edit_metric.evaluate(pipe, new_heldout, steps=16, batch_size=16)
after_old = edit_metric.evaluate(pipe, old_heldout, steps=16, batch_size=16)
print(f"{'':<12}{'before':>8}{'after':>8}")
print(f"{'new edit':<12}{before_new.row('model').edit_accuracy:>8.2f}{after_new.row('model').edit_accuracy:>8.2f}")
print(f"{'old edits':<12}{before_old.row('model').edit_accuracy:>8.2f}{after_old.row('model').edit_accuracy:>8.2f}")

# %% tags=["gpu"]
if on_gpu:  # the full run: the new edit learned, the old ones kept
    assert after_new.row("model").edit_accuracy >= 0.8
    assert after_old.row("model").edit_accuracy >= 0.8 * before_old.row("model").edit_accuracy
else:
    print("no GPU: the short CPU run above shows the mechanics only")

# %%
fig, axes = plt.subplots(4, 6, figsize=(10, 7.2))
for column, (pair, image_before, image_after) in enumerate(zip(new_heldout, before_new.images, after_new.images)):
    if column == 6:
        break
    rows = [(pair.source, "source"), (pair.target, "target"), (image_before, "base model"), (image_after, "with LoRA")]
    for row, (picture, title) in enumerate(rows):
        axes[row, column].imshow(picture)
        axes[row, column].set_title(title, fontsize=8)
        axes[row, column].axis("off")
plt.show()

# %% [markdown]
# ### The LoRA in a stock pipeline
#
# The trainer saved the adapter with `FluxKontextPipeline.save_lora_weights`; a fresh
# pipeline loads it with diffusers' own `load_lora_weights` and gives the same edit.

# %%
print(sorted(path.name for path in (workdir / "lora").iterdir()))
fresh = kt.load_pipeline()
fresh.load_lora_weights(workdir / "lora")
call = dict(image=new_heldout[0].source, prompt=new_heldout[0].instruction, height=size, width=size,
            max_area=size * size, _auto_resize=False, num_inference_steps=16, max_sequence_length=tokens,
            output_type="latent")
kt.compare("trained vs loaded LoRA", fresh(**call, generator=torch.Generator().manual_seed(0)).images,
           pipe(**call, generator=torch.Generator().manual_seed(0)).images, atol=1e-4)  # 16 steps amplify rounding

# %% [markdown]
# ### Interrupted? Resume
#
# Every `checkpoint_every` steps the trainer writes the LoRA weights, the optimizer state
# and the history. Every random draw of step s comes from a generator seeded with
# (seed, s), so a resumed run takes exactly the steps an uninterrupted one would have.

# %%
short = TrainConfig(**{**config.__dict__, "steps": 6, "checkpoint_every": 2})
straight = train_lora(kt.load_pipeline(), cache, short, workdir / "straight", progress=False)
stopped = train_lora(kt.load_pipeline(), cache, short, workdir / "resumed", progress=False, stop_after=3)
print("interrupted after 3 steps; checkpoints:", [path.name for path in checkpoints(workdir / "resumed")])
resumed = train_lora(kt.load_pipeline(), cache, short, workdir / "resumed", resume=True, progress=False)
same = [a["loss"] for a in straight.history] == [b["loss"] for b in resumed.history]
print("resumed run equals the uninterrupted one:", same)
assert same

# %% [markdown]
# ### On the real FLUX.1-Kontext-dev
#
# The same call trains a LoRA of the real model. From a shell, with a folder of pairs:
#
#     python -m kontext_teach.training.train --model /models/FLUX.1-Kontext-dev --data my_pairs/ \
#         --output runs/my_lora --rank 16 --gradient-checkpointing --steps 1000 --max-sequence-length 512
#
# or in Python: `train_lora(kt.load_pipeline("/models/FLUX.1-Kontext-dev"), pairs, config, out)`.
# `accelerate launch --num_processes N -m kontext_teach.training.train ...` splits each step's batch
# over N GPUs. What to expect, computed here on the meta device and measured with
# `python -m kontext_teach.training.bench` on one H200 (random weights, bf16, torch 2.11, diffusers
# 0.42.1; README, Performance):

# %%
meta_transformer = full_size.meta_components()["transformer"]
for targets, rank in [("attention", 16), ("all-linear", 16)]:
    print(f"rank {rank} LoRA on {targets:<10}: {solutions.lora_parameter_count(meta_transformer, targets, rank):>11,} "
          f"trainable of {full_size.count_parameters(meta_transformer):,}")

# %% [markdown]
# | one H200, r16 LoRA on to_q/k/v/to_out.0, batch 1, 512 text tokens | time per step | peak memory |
# | --- | --- | --- |
# | 1024², diffusers' set-up (checkpointing on every block) | 1.77 s | 26.8 GiB |
# | 1024², this trainer: `compile_blocks=True`, fused AdamW | 1.41 s (1.26×) | 26.5 GiB |
# | 1024², this trainer, also `checkpoint_fraction=0.5` | 1.23 s (1.44×) | 42.9 GiB |
# | 512², diffusers' set-up | 0.43 s | 23.7 GiB |
# | 512², this trainer: `compile_blocks=True`, fused AdamW | 0.32 s (1.34×) | 23.6 GiB |
#
# Most of the memory is the bf16 transformer itself (11.9 B × 2 bytes = 22.2 GiB); the
# activations are small with gradient checkpointing. For smaller GPUs: train at 512²
# (a quarter of the image tokens), keep gradient checkpointing on, cache the text
# embeddings (the trainer does), and load the transformer quantised (8-bit or 4-bit, as
# ai-toolkit does) if 24 GiB is all you have; an 8-bit AdamW saves a little more. cuDNN's
# attention backend failed in Flux's backward pass on the H200, so the trainer switches it off
# on CUDA (`torch.backends.cuda.enable_cudnn_sdp(False)`); PyTorch then uses flash attention.

# %% [markdown]
# ## Summary
# - A LoRA learns W + (α/r)·BA for chosen linear layers; everything else stays frozen, and
#   B = 0 at the start leaves the model unchanged.
# - Kontext LoRA training is the model's own objective: noisy target tokens, clean context
#   tokens with position index 1, the output sliced to the target, MSE to noise − x₀.
# - Cache latents and text embeddings once; checkpoint LoRA and optimizer state; seed every
#   step's draws and a resumed run is identical to an uninterrupted one.
# - Measure the new edit *and* the old ones; replay old pairs to keep them.
# - The saved file loads into a stock `FluxKontextPipeline` with `load_lora_weights`.
#
# ## Exercises
# 1. How many parameters does a rank-16 LoRA on all linear layers of the full model train?
#    Solution: `kontext_teach.solutions.s09_lora_training.lora_parameter_count` (used above).
# 2. Write the weight a LoRA layer acts with, W + (α/r)·B·A, and check it against peft's
#    output. Solution: `merged_weight`.
# 3. Build a training set with a given share of replayed old pairs, interleaved.
#    Solution: `replay_mix` (used above). Train without replay: what happens to the old edits?
#
# ## References
# - Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, ICLR 2022.
# - diffusers `examples/dreambooth/train_dreambooth_lora_flux_kontext.py` (objective,
#   densities, `--lora_layers`, `save_lora_weights`), `training_utils.py`
#   (`compute_density_for_timestep_sampling`, `cast_training_params`); `loaders/lora_pipeline.py`
#   (`FluxLoraLoaderMixin.load_lora_weights`).
# - ostris/ai-toolkit (Kontext LoRA recipes: rank 16, guidance 1.0, 8-bit AdamW, quantised base).
# - peft `LoraConfig`, `get_peft_model_state_dict`; accelerate `Accelerator`.
# - Black Forest Labs, *FLUX.1 Kontext*, arXiv:2506.15742 (2025).

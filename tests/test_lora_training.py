"""The LoRA trainer: objective, slicing, caching, resume, saving and stock loading, bad data."""

import json
import signal

import pytest
import torch
from safetensors import safe_open
from PIL import Image, ImageDraw, ImageOps

import kontext_teach as kt
from kontext_teach.training import lora_training as lt
from kontext_teach.training.edit_pairs import EditPair, PairDataError, save_pair_folder
from kontext_teach.training.kontext_objective import EditBatch, kontext_loss, kontext_prediction
from kontext_teach.packing import pack_latents
from kontext_teach.training.train import main as train_cli

TOKENS = 16  # short T5 sequences keep the tests fast


def scene(seed: int, size=(32, 32)) -> Image.Image:
    image = Image.new("RGB", size, (230, 230, 220))
    x = 2 + (seed * 5) % 12
    ImageDraw.Draw(image).ellipse((x, 4, x + 12, 16), fill=(200, 40, 40))
    return image


def flip_pairs(count=3, size=(32, 32)):
    return [EditPair(scene(i, size), "flip the image upside down", ImageOps.flip(scene(i, size)), f"pair {i}")
            for i in range(count)]


def config(**overrides):
    return lt.TrainConfig(**{**dict(steps=4, rank=2, learning_rate=1e-3, max_sequence_length=TOKENS), **overrides})


@pytest.fixture()
def fresh():
    return kt.load_pipeline(device="cpu")


def test_cache_holds_the_pipelines_latents_and_embeddings(fresh):
    pair = flip_pairs(1, size=(48, 32))[0]
    (cached,) = lt.cache_pairs(fresh, [pair], TOKENS)
    image = fresh.image_processor.preprocess(pair.target, 32, 48)
    mode = fresh.vae.encode(image).latent_dist.mode()
    expected = (mode - fresh.vae.config.shift_factor) * fresh.vae.config.scaling_factor
    kt.compare("cached target latents", cached.target_latents, expected)
    embeds, pooled, _ = fresh.encode_prompt(prompt=pair.instruction, prompt_2=None, max_sequence_length=TOKENS)
    kt.compare("cached T5 states", cached.prompt_embeds, embeds)
    kt.compare("cached pooled CLIP", cached.pooled_prompt_embeds, pooled)
    assert cached.context_latents.shape == cached.target_latents.shape == (1, 16, 4, 6)


@pytest.mark.parametrize("batch, target_hw, context_hw", [(1, (4, 4), (4, 4)), (2, (4, 6), (6, 4))])
def test_objective_matches_a_hand_written_loss(fresh, batch, target_hw, context_hw):
    g = torch.Generator().manual_seed(0)
    data = EditBatch(torch.randn(batch, 16, *target_hw, generator=g), torch.randn(batch, 16, *context_hw, generator=g),
                     torch.randn(batch, TOKENS, 64, generator=g), torch.randn(batch, 64, generator=g))
    sigmas, noise = torch.rand(batch, generator=g), torch.randn(batch, 16, *target_hw, generator=g)
    x0 = data.target_latents
    s = sigmas.view(-1, 1, 1, 1)
    noisy = (1 - s) * x0 + s * noise
    # what FluxKontextPipeline feeds the transformer, written out: target ids (0, r, c), context ids (1, r, c)
    grid = lambda h, w, first: torch.tensor([[first, r, c] for r in range(h // 2) for c in range(w // 2)], dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = fresh.transformer(hidden_states=torch.cat([pack_latents(noisy), pack_latents(data.context_latents)], 1),
                                timestep=sigmas, guidance=torch.full((batch,), 1.0),
                                pooled_projections=data.pooled_prompt_embeds, encoder_hidden_states=data.prompt_embeds,
                                txt_ids=torch.zeros(TOKENS, 3),
                                img_ids=torch.cat([grid(*target_hw, 0), grid(*context_hw, 1)]), return_dict=False)[0]
        expected = ((out[:, : pack_latents(noisy).shape[1]] - pack_latents(noise - x0)) ** 2).mean(dim=(1, 2))
        ours = kontext_loss(fresh.transformer, data, sigmas, noise, guidance=1.0)
    kt.compare("per-sample Kontext loss", ours, expected, atol=1e-6)


def test_prediction_is_sliced_to_the_target_but_sees_the_context(fresh):
    g = torch.Generator().manual_seed(1)
    data = EditBatch(torch.randn(1, 16, 4, 4, generator=g), torch.randn(1, 16, 6, 6, generator=g),
                     torch.randn(1, TOKENS, 64, generator=g), torch.randn(1, 64, generator=g))
    noisy, sigmas = torch.randn(1, 16, 4, 4, generator=g), torch.tensor([0.5])
    with torch.no_grad():
        prediction = kontext_prediction(fresh.transformer, data, noisy, sigmas, 1.0)
        other_context = EditBatch(data.target_latents, -data.context_latents, data.prompt_embeds,
                                  data.pooled_prompt_embeds)
        changed = kontext_prediction(fresh.transformer, other_context, noisy, sigmas, 1.0)
    assert prediction.shape == (1, 4, 64)  # 2x2 target tokens only, not the 3x3 context tokens
    assert (prediction - changed).abs().max() > 1e-4  # the context tokens take part in attention


def test_lora_targets_only_named_block_layers(fresh):
    lt.add_lora(fresh.transformer, config(targets="attention"))
    trainable = {n.split(".lora_")[0] for n, p in fresh.transformer.named_parameters() if p.requires_grad}
    cfg = fresh.transformer.config
    assert len(trainable) == cfg.num_layers * 4 + cfg.num_single_layers * 3
    assert all(n.startswith(("transformer_blocks.", "single_transformer_blocks.")) for n in trainable)
    assert "transformer_blocks.0.attn.to_out.0" in trainable and "transformer_blocks.0.attn.add_q_proj" not in trainable


def test_all_linear_targets_leave_the_outer_layers_alone(fresh):
    lt.add_lora(fresh.transformer, config(targets="all-linear"))
    trainable = {n.split(".lora_")[0] for n, p in fresh.transformer.named_parameters() if p.requires_grad}
    assert "proj_out" not in trainable and "single_transformer_blocks.0.proj_out" in trainable
    assert "transformer_blocks.1.norm1_context.linear" in trainable


def test_training_lowers_the_loss_and_changes_only_lora_weights(fresh, tmp_path):
    before = {n: p.detach().clone() for n, p in fresh.transformer.named_parameters()}
    cache = lt.cache_pairs(fresh, flip_pairs(), TOKENS)
    fixed = lt.training_step_inputs(cache, config(), step=0)  # one fixed batch, noise level and noise

    def fixed_loss():
        with torch.no_grad():
            return kontext_loss(fresh.transformer, *fixed).mean().item()

    lt.add_lora(fresh.transformer, config())
    start = fixed_loss()  # gaussian LoRA init leaves B = 0: the model is unchanged
    fresh.transformer.delete_adapters("default")
    result = lt.train_lora(fresh, cache, config(steps=25, learning_rate=3e-3), tmp_path, progress=False)
    assert fixed_loss() < start
    for name, param in fresh.transformer.named_parameters():
        base = name.replace(".base_layer", "")
        if "lora_" in name:
            assert param.requires_grad
        else:
            assert torch.equal(param, before[base]), f"{name} changed"
    assert len(result.history) == 25 and result.lora_file.is_file()


def test_resume_after_interruption_gives_the_same_lora(tmp_path):
    pairs = flip_pairs()
    straight = lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=6), tmp_path / "a", progress=False)
    first = lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=6, checkpoint_every=2),
                          tmp_path / "b", progress=False, stop_after=3)  # interrupted after step 3
    assert first.interrupted and not (tmp_path / "b" / "pytorch_lora_weights.safetensors").exists()
    assert [p.name for p in lt.checkpoints(tmp_path / "b")] == ["step-0000002"]
    resumed = lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=6, checkpoint_every=2),
                            tmp_path / "b", resume=True, progress=False)
    assert [h["loss"] for h in resumed.history[:2]] == [h["loss"] for h in straight.history[:2]]
    a, b = lt.load_file(straight.lora_file), lt.load_file(resumed.lora_file)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_resume_with_other_settings_is_refused(tmp_path):
    pairs = flip_pairs(2)
    lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=2, checkpoint_every=1), tmp_path,
                  progress=False, stop_after=1)
    with pytest.raises(ValueError, match="different rank"):
        lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=2, rank=3), tmp_path, resume=True,
                      progress=False)


@pytest.mark.parametrize("rank, alpha, targets", [(4, 8.0, "attention"), (2, 1.0, "diffusers-script"),
                                                   (3, None, "all-linear")])
def test_stock_loading_keeps_rank_alpha_and_layers(tmp_path, rank, alpha, targets):
    trained = kt.load_pipeline(device="cpu")
    settings = config(steps=2, rank=rank, alpha=alpha, targets=targets, learning_rate=2e-2)
    result = lt.train_lora(trained, flip_pairs(2), settings, tmp_path, progress=False)
    with safe_open(result.lora_file, "pt") as saved:  # diffusers' loader reads the LoraConfig from here
        metadata = json.loads(saved.metadata()["lora_adapter_metadata"])
    assert metadata["transformer.r"] == rank and metadata["transformer.lora_alpha"] == (alpha or rank)
    stock = kt.load_pipeline(device="cpu")
    stock.load_lora_weights(result.output_dir)  # diffusers' own loader
    call = dict(image=scene(0), prompt="flip the image upside down", height=32, width=32, max_area=32 * 32,
                _auto_resize=False, num_inference_steps=2, max_sequence_length=TOKENS, output_type="latent")
    ours, theirs = (p(**call, generator=torch.Generator().manual_seed(0)).images for p in (trained, stock))
    kt.compare(f"trained vs stock-loaded LoRA (r {rank}, alpha {alpha}, {targets})", theirs, ours, atol=1e-5)


def test_saved_lora_loads_in_a_stock_pipeline(tmp_path):
    trained = kt.load_pipeline(device="cpu")
    result = lt.train_lora(trained, flip_pairs(), config(steps=3, learning_rate=1e-2), tmp_path, progress=False)
    stock = kt.load_pipeline(device="cpu")
    stock.load_lora_weights(result.output_dir)  # diffusers' own loader, nothing of ours
    plain = kt.load_pipeline(device="cpu")
    call = dict(image=scene(0), prompt="flip the image upside down", height=32, width=32, max_area=32 * 32,
                _auto_resize=False, num_inference_steps=2, max_sequence_length=TOKENS, output_type="latent")
    outputs = [p(**call, generator=torch.Generator().manual_seed(0)).images for p in (trained, stock, plain)]
    kt.compare("trained vs stock-loaded LoRA", outputs[1], outputs[0], atol=1e-5)
    assert (outputs[2] - outputs[0]).abs().max() > 1e-4  # the LoRA does change the result


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="targets='attn'"):
        lt.TrainConfig(targets="attn")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        lt.TrainConfig(steps=0)


def test_loss_by_sigma_bins_per_sample_losses():
    history = [dict(sigmas=[0.05, 0.95], losses=[1.0, 3.0]), dict(sigmas=[0.06], losses=[2.0])]
    bins = lt.loss_by_sigma(history, bins=2)
    assert bins[0] == (0.25, 1.5, 2) and bins[1] == (0.75, 3.0, 1)


def test_command_line_trains_and_reports_bad_data(tmp_path, capsys):
    data = save_pair_folder(flip_pairs(2), tmp_path / "data")
    code = train_cli(["--data", str(data), "--output", str(tmp_path / "out"), "--steps", "2", "--rank", "2",
                      "--max-sequence-length", str(TOKENS), "--no-progress"])
    assert code == 0 and (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
    assert "LoRA written to" in capsys.readouterr().out
    (data / "pairs.jsonl").write_text('{"source": "source/00000.png", "target": "x.png", "instruction": "x"}\n')
    assert train_cli(["--data", str(data), "--output", str(tmp_path / "o2")]) == 2
    assert "x.png does not exist" in capsys.readouterr().err


def test_a_used_output_folder_is_refused_unless_resume_or_overwrite(tmp_path):
    pairs = flip_pairs(2)
    lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=2), tmp_path, progress=False)
    with pytest.raises(lt.OutputFolderError, match="already holds files .*--resume .*--overwrite"):
        lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=2), tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    again = lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=3, checkpoint_every=1), tmp_path,
                          progress=False, overwrite=True)
    assert [lt.checkpoint_step(p) for p in lt.checkpoints(tmp_path)] == [2, 3]  # the old run's step 2 is gone
    assert len(again.history) == 3 and (tmp_path / "notes.txt").read_text() == "mine"  # not ours: kept


def test_output_problems_are_found_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in lt.output_problem(tmp_path / "file")
    assert "file is a file" in lt.output_problem(tmp_path / "file" / "sub")
    assert "exclude each other" in lt.output_problem(tmp_path / "new", resume=True, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "photo.png").write_text("x")
    assert "no run of this trainer to resume" in lt.output_problem(tmp_path / "other", resume=True)
    assert lt.output_problem(tmp_path / "new") is None and not (tmp_path / "new").exists()  # checks write nothing


def test_checkpoints_are_pruned_by_step_number_within_their_run(fresh, tmp_path):
    parameters = lt.add_lora(fresh.transformer, config())
    optimizer = torch.optim.AdamW(parameters)
    result = lt.TrainResult(tmp_path)
    for step in (550, 600):  # an older run's checkpoints
        lt.save_checkpoint(tmp_path, step, fresh.transformer, optimizer, result, config(), keep=2, run="old")
    for step in (50, 100, 150):
        lt.save_checkpoint(tmp_path, step, fresh.transformer, optimizer, result, config(), keep=2, run="new")
    assert [lt.checkpoint_step(p) for p in lt.checkpoints(tmp_path, "new")] == [100, 150]
    assert [lt.checkpoint_step(p) for p in lt.checkpoints(tmp_path)] == [100, 150, 550, 600]
    (tmp_path / "checkpoints" / "step-12000000").mkdir()  # more digits: sorted as a number, not as text
    assert lt.checkpoint_step(lt.checkpoints(tmp_path)[-1]) == 12_000_000


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    result = lt.train_lora(kt.load_pipeline(device="cpu"), flip_pairs(2), config(steps=2), tmp_path / "new",
                           resume=True, progress=False)
    assert "nothing to resume" in capsys.readouterr().err and len(result.history) == 2


def test_resume_checks_the_settings_before_any_work(tmp_path):
    lt.train_lora(kt.load_pipeline(device="cpu"), flip_pairs(2), config(steps=2), tmp_path, progress=False,
                  stop_after=1)
    with pytest.raises(lt.OutputFolderError, match=r"different learning_rate \(learning_rate 0.001 -> 0.002\)"):
        lt.check_output(tmp_path, resume=True, config=config(steps=2, learning_rate=2e-3))
    lt.check_output(tmp_path, resume=True, config=config(steps=5))  # more steps: allowed


def interrupt_at(monkeypatch, step_number: int, how: str):
    """Make the trainer see Ctrl-C during step `step_number` (1-based): as a signal, or as KeyboardInterrupt."""
    real_step, calls = lt.optimizer_step, []

    def step(*args, **kwargs):
        calls.append(1)
        out = real_step(*args, **kwargs)
        if len(calls) == step_number:
            if how == "signal":
                signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: finish this step, then stop
            else:
                raise KeyboardInterrupt  # a hard interrupt inside the update
        return out

    monkeypatch.setattr(lt, "optimizer_step", step)


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch, ctrl_c_interrupts):
    pairs = flip_pairs()
    straight = lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=5), tmp_path / "a", progress=False)
    interrupt_at(monkeypatch, 3, "signal")
    stopped = lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=5), tmp_path / "b", progress=False)
    monkeypatch.undo()
    assert stopped.interrupted and stopped.checkpoint.name == "step-0000003" and len(stopped.history) == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    resumed = lt.train_lora(kt.load_pipeline(device="cpu"), pairs, config(steps=5), tmp_path / "b", resume=True,
                            progress=False)
    a, b = lt.load_file(straight.lora_file), lt.load_file(resumed.lora_file)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_ignored_ctrl_c_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    try:
        with lt.finish_step_on_interrupt() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
        assert not stop["requested"] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_hard_interrupt_inside_an_update_keeps_the_last_whole_checkpoint(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 3, "raise")
    stopped = lt.train_lora(kt.load_pipeline(device="cpu"), flip_pairs(2), config(steps=5, checkpoint_every=2),
                            tmp_path, progress=False)
    assert stopped.interrupted and stopped.checkpoint.name == "step-0000002"
    assert [p.name for p in lt.checkpoints(tmp_path)] == ["step-0000002"]


@pytest.mark.parametrize("setting, message", [
    (dict(learning_rate=-1.0), "learning_rate must be a positive number"),
    (dict(keep_checkpoints=0), "keep_checkpoints must be at least 1"),
    (dict(checkpoint_every=-1), "checkpoint_every must be 0 or more"),
    (dict(max_sequence_length=1000), "more than 512, which FluxKontextPipeline refuses"),
    (dict(alpha=0.0), "alpha must be positive"),
    (dict(density="logit-normal"), "density='logit-normal'"),
])
def test_bad_settings_are_refused_with_what_to_use(setting, message):
    with pytest.raises(ValueError, match=message):
        lt.TrainConfig(**setting)


def test_recipes_agree_with_the_sampler_and_diffusers_script():
    from kontext_teach.training import recipes, timestep_sampling

    assert recipes.DENSITIES == timestep_sampling.DENSITIES
    assert recipes.LOSS_WEIGHTINGS == timestep_sampling.LOSS_WEIGHTINGS
    double, single = recipes.LORA_TARGETS["diffusers-script"]  # the script's defaults (kontext-facts.md section 8)
    assert set(double) == {"attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
                           "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                           "ff_context.net.2"}
    assert set(single) == {"attn.to_k", "attn.to_q", "attn.to_v", "proj_mlp"}
    script = recipes.PRESETS["diffusers-script"]
    assert (script["density"], script["loss_weighting"], script["guidance"], script["rank"]) == ("uniform", "none", 3.5, 4)


def test_cosine_schedule_warms_up_peaks_and_ends_at_a_tenth():
    from kontext_teach.training.recipes import learning_rate_at
    config = lt.TrainConfig(steps=100, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=10)
    rates = [learning_rate_at(config, step) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])), "decays monotonically after the warm-up"
    assert rates[-1] == pytest.approx(1e-4, rel=0.05)
    assert learning_rate_at(lt.TrainConfig(learning_rate=2e-4), 57) == 2e-4
    with pytest.raises(ValueError, match="lr_schedule"):
        lt.TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="warmup_steps"):
        lt.TrainConfig(steps=10, lr_schedule="cosine", warmup_steps=10)

"""The trainer's command line: fast --help, presets per model size, argument and output checks, Ctrl-C."""

import json
import shlex
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image, ImageDraw, ImageOps

from kontext_teach.lab import loading
from kontext_teach.training import lora_training as lt
from kontext_teach.training import train
from kontext_teach.training.edit_pairs import EditPair, save_pair_folder


def scene(seed: int) -> Image.Image:
    image = Image.new("RGB", (32, 32), (230, 230, 220))
    x = 2 + (seed * 5) % 12
    ImageDraw.Draw(image).ellipse((x, 4, x + 12, 16), fill=(200, 40, 40))
    return image


@pytest.fixture()
def data(tmp_path):
    pairs = [EditPair(scene(i), "flip it", ImageOps.flip(scene(i))) for i in range(2)]
    return save_pair_folder(pairs, tmp_path / "data")


@pytest.fixture()
def no_training(monkeypatch):
    """Record the config the command line would train with; load and train nothing."""
    seen = {}

    def fake_train(pipe, pairs, config, output, **kwargs):
        seen["config"] = config
        return lt.TrainResult(lt.pathlib.Path(output), history=[dict(step=1, loss=1.0, sigmas=[0.5], losses=[1.0])])

    monkeypatch.setattr(loading, "load_pipeline", lambda *args, **kwargs: "a pipeline")
    monkeypatch.setattr(lt, "train_lora", fake_train)
    return seen


def test_help_is_fast_and_imports_no_torch():
    code = ("import sys; from kontext_teach.__main__ import main\ntry: main(['train', '--help'])\n"
            "except SystemExit: pass\nprint('torch imported' if 'torch' in sys.modules else 'torch not imported')")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert "torch not imported" in result.stdout and "--preset" in result.stdout, result.stderr
    assert "miniature" in result.stdout and "diffusers-script" in result.stdout  # the presets are documented
    assert elapsed < 5, f"--help took {elapsed:.1f} s"


def test_the_preset_follows_the_model(data, tmp_path, no_training, capsys, monkeypatch):
    monkeypatch.delenv(loading.MODEL_ENV, raising=False)
    record = json.loads((loading.EMBEDDED_MODEL_DIR / "training_record.json").read_text())
    assert train.main(["--data", str(data), "--output", str(tmp_path / "a"), "--steps", "7"]) == 0
    config, out = no_training["config"], capsys.readouterr().out
    assert (config.rank, config.learning_rate, config.targets, config.batch_size) == (16, 1e-3, "all-linear", 8)
    assert config.max_sequence_length == record["max_sequence_length"] and config.steps == 7
    assert "preset miniature" in out and "from the command line: steps 7" in out
    (tmp_path / "full").mkdir()  # a folder without a training record: a full-size model
    assert train.main(["--data", str(data), "--output", str(tmp_path / "b"), "--model", str(tmp_path / "full")]) == 0
    config = no_training["config"]
    assert (config.rank, config.learning_rate, config.targets, config.batch_size, config.max_sequence_length,
            config.guidance) == (4, 1e-4, "diffusers-script", 1, 512, 1.0)
    assert "preset full-size" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--learning-rate", "-1"], "learning_rate must be a positive number"),
    (["--keep-checkpoints", "0"], "keep_checkpoints must be at least 1"),
    (["--checkpoint-every", "-1"], "checkpoint_every must be 0 or more"),
    (["--max-sequence-length", "1000"], "more than 512, which FluxKontextPipeline refuses at inference"),
    (["--resume", "--overwrite"], "resume and overwrite exclude each other"),
])
def test_bad_arguments_are_refused_before_loading_anything(data, tmp_path, no_training, capsys, arguments, message):
    assert train.main(["--data", str(data), "--output", str(tmp_path / "out"), *arguments]) == 2
    assert message in capsys.readouterr().err and "config" not in no_training


def test_outputs_are_checked_before_training(data, tmp_path, no_training, capsys):
    (tmp_path / "a_file").write_text("x")
    assert train.main(["--data", str(data), "--output", str(tmp_path / "a_file")]) == 2
    assert "is a file, not a folder; choose a folder path" in capsys.readouterr().err
    assert train.main(["--data", str(data), "--output", str(tmp_path / "a_file" / "lora")]) == 2
    assert "a_file is a file" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "train_config.json").write_text("{}")
    assert train.main(["--data", str(data), "--output", str(tmp_path / "used")]) == 2
    assert "already holds files (train_config.json); continue the run in it with --resume" in capsys.readouterr().err
    assert "config" not in no_training


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_output_is_refused(data, tmp_path, no_training, capsys):
    (tmp_path / "locked").mkdir(mode=0o500)
    assert train.main(["--data", str(data), "--output", str(tmp_path / "locked" / "out")]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_a_json_array_gets_a_clear_message(data, tmp_path, no_training, capsys):
    lines = (data / "pairs.jsonl").read_text().splitlines()
    (data / "pairs.jsonl").write_text(json.dumps([json.loads(line) for line in lines]))
    assert train.main(["--data", str(data), "--output", str(tmp_path / "out")]) == 2
    assert "holds one JSON array; the format is JSON Lines" in capsys.readouterr().err


def test_the_resume_command_never_overwrites():
    command = train.resume_command(["--data", "my pairs", "--output", "o", "--overwrite"])
    assert shlex.split(command)[1:] == ["-m", "kontext_teach", "train", "--data", "my pairs", "--output", "o",
                                        "--resume"]


def test_the_summary_leaves_out_empty_noise_bins():
    result = lt.TrainResult(lt.pathlib.Path("."), history=[dict(step=1, loss=2.0, sigmas=[0.95], losses=[2.0])])
    lines = train.loss_summary(result)
    assert len(lines) == 2 and "nan" not in "".join(lines) and "over 1 samples" in lines[1]


def test_ctrl_c_saves_and_prints_the_command_that_resumes(data, tmp_path, capsys, monkeypatch, ctrl_c_interrupts):
    real_step, calls = lt.optimizer_step, []

    def step(*args, **kwargs):
        calls.append(1)
        out = real_step(*args, **kwargs)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(lt, "optimizer_step", step)
    argv = ["--data", str(data), "--output", str(tmp_path / "out"), "--steps", "4", "--batch-size", "2",
            "--no-progress"]
    assert train.main(argv) == 130
    out = capsys.readouterr().out
    assert "stopped at step 2 of 4; checkpoint" in out and "step-0000002" in out
    command = shlex.split(out.split("continue with:")[1].strip())
    assert command[-1] == "--resume" and command[1:4] == ["-m", "kontext_teach", "train"]
    monkeypatch.undo()
    assert train.main(command[4:]) == 0
    assert "trained 4 steps on 2 pairs (resumed at step 2)" in capsys.readouterr().out

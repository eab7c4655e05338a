"""The README's shell commands work as written after `make setup`, without an activated venv."""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw, ImageOps

from kontext_teach.training.edit_pairs import EditPair, save_pair_folder

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
VENV_PYTHON = ".venv/bin/python"


def shell_commands(markdown: str) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def training_commands() -> list[str]:
    return [c for c in shell_commands(README) if " -m kontext_teach train " in c]


def as_run_here(command: str) -> list[str]:
    """The README's words, with .venv/bin/python pointing at this venv's interpreter."""
    words = shlex.split(command)
    return [sys.executable if w == VENV_PYTHON else w for w in words]


def test_python_commands_use_the_venv_by_path():
    python_commands = [c for c in shell_commands(README) if re.search(r"(^|\s)(python3?|\S*/python)\s", c)]
    assert python_commands, "the README shows no python command"
    for command in python_commands:
        assert command.startswith(VENV_PYTHON + " "), f"{command!r} needs an activated venv; use {VENV_PYTHON}"
    assert len(training_commands()) == 2


def test_the_documented_help_runs_as_written():
    result = subprocess.run(as_run_here(f"{VENV_PYTHON} -m kontext_teach train --help"), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--preset" in result.stdout, result.stderr


def test_make_train_runs_the_documented_command():
    if shutil.which("make") is None:
        pytest.skip("no make here")
    result = subprocess.run(["make", "-n", "train", 'ARGS=--data my_pairs/ --output runs/my_lora'], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert f"{VENV_PYTHON} -m kontext_teach train --data my_pairs/ --output runs/my_lora" in result.stdout
    assert 'make train ARGS="--data my_pairs/ --output runs/my_lora"' in README


def test_the_documented_training_command_trains_a_lora_that_loads(tmp_path):
    def scene(seed):
        image = Image.new("RGB", (32, 32), (230, 230, 220))
        ImageDraw.Draw(image).ellipse((2 + seed * 5, 4, 14 + seed * 5, 16), fill=(200, 40, 40))
        return image

    save_pair_folder([EditPair(scene(i), "flip it", ImageOps.flip(scene(i))) for i in range(3)], tmp_path / "my_pairs")
    command = as_run_here(training_commands()[0]) + ["--steps", "2", "--batch-size", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("KONTEXT_TEACH_MODEL", None)
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "preset miniature" in result.stdout and "LoRA written to runs/my_lora" in result.stdout
    import kontext_teach as kt

    pipe = kt.load_pipeline(device="cpu")
    pipe.load_lora_weights(str(tmp_path / "runs/my_lora"))  # as the README says
    assert len(pipe.transformer.peft_config) == 1


def test_one_cpu_torch_command_everywhere():
    command = "pip install torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu"
    assert command in README and command in (ROOT / "environment.yml").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" not in README.replace("--extra-index-url", "")

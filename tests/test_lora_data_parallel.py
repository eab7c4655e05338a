"""Data-parallel training: two CPU processes with batch 1 train the LoRA that one process with batch 2 trains."""

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from kontext_teach.toy import toy_world
from kontext_teach.training.edit_pairs import save_pair_folder
from kontext_teach.training.train import main as train_cli

ARGS = ["--steps", "3", "--rank", "2", "--learning-rate", "1e-3", "--targets", "attention", "--max-sequence-length", "24",
        "--no-progress"]


def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path):
    data = save_pair_folder(toy_world.make_pairs("train", 6, families=["flip_upside_down"]), tmp_path / "data")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "kontext_teach.training.train", "--data", str(data), "--output", str(tmp_path / "ddp"), "--batch-size", "1",
               *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert train_cli(["--data", str(data), "--output", str(tmp_path / "one"), "--batch-size", "2", *ARGS]) == 0
    parallel = load_file(tmp_path / "ddp" / "pytorch_lora_weights.safetensors")
    single = load_file(tmp_path / "one" / "pytorch_lora_weights.safetensors")
    assert parallel.keys() == single.keys() and parallel
    for key in parallel:
        torch.testing.assert_close(parallel[key], single[key], atol=1e-5, rtol=1e-4)

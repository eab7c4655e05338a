"""The training-speed benchmark runs on CPU, and its fast variant trains the same LoRA;
its results are kept as JSON files and README's table is rendered from the newest."""

import json

import pytest
import torch

from kontext_teach.training import bench
from kontext_teach.training.lora_training import make_optimizer, optimizer_step, prepare_transformer
from accelerate import Accelerator


def lora_weights_after(variant, steps=3):
    model = bench.build_transformer(bench.SMALL_TRANSFORMER, torch.device("cpu"), torch.float32)
    parameters = prepare_transformer(model, variant.config)
    optimizer = make_optimizer(parameters, variant.config, torch.device("cpu"))
    batch, sigmas, noise = bench.kontext_batch(bench.SMALL_TRANSFORMER, 32, 8, "cpu", torch.float32)
    model.train()
    losses = [optimizer_step(model, parameters, optimizer, batch, sigmas, noise, variant.config,
                             Accelerator(cpu=True)).item() for _ in range(steps)]
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora" in n}, losses


def test_fast_variant_trains_the_same_lora_in_fp32():
    reference, fast = bench.variants(torch.device("cpu"), checkpoint_fraction=0.5, compile_blocks=False)
    fast = bench.Variant(fast.name, bench.dataclasses.replace(fast.config, fused_optimizer="yes"))
    (a, losses_a), (b, losses_b) = lora_weights_after(reference), lora_weights_after(fast)
    assert a.keys() == b.keys() and len(a) > 0
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert max(abs(x - y) for x, y in zip(losses_a, losses_b)) < 1e-6
    assert losses_a[-1] != losses_a[0]  # the steps did train


def test_flops_count_grows_with_tokens():
    small, large = (bench.forward_flops(bench.SMALL_TRANSFORMER, side, 8) for side in (32, 64))
    assert 0 < small < large


def test_full_size_forward_flops_at_1024():
    flops = bench.forward_flops(bench.full_size.TRANSFORMER, 1024, 512)
    # By hand, per token-applied weight: 19 double blocks (113 M weights per stream; 8192 image and
    # 512 text tokens) 3.7e13, 38 single blocks (113 M weights, 8704 tokens) 7.5e13, attention
    # (4 L^2 d per block) 5.3e13: 1.65e14. The naive 2 x 11.9e9 x 8704 (2.07e14) also counts the
    # AdaLN weights, which act on one vector, not on the tokens.
    assert 1.6e14 < flops < 1.7e14


def test_benchmark_script_prints_side_by_side_ratios(capsys):
    before = sorted(bench.RESULTS_DIR.glob("*"))
    bench.main(["--size", "small", "--sides", "32", "--warmup", "0", "--steps", "1", "--compile", "no"])
    out = capsys.readouterr().out
    assert "(a) reference" in out and "(b) kontext_teach ckpt 50%" in out and "speed-up (a)/(b)" in out
    assert "nan" not in out.lower() and "peak memory n/a" in out  # CPU: memory not measured, said so
    assert sorted(bench.RESULTS_DIR.glob("*")) == before  # a CPU run leaves the repository's results alone


def test_results_file_holds_what_the_run_measured(tmp_path, capsys):
    path = tmp_path / "cpu.json"
    bench.main(["--size", "small", "--sides", "32", "--warmup", "0", "--steps", "3", "--compile", "no",
                "--checkpoint-fraction", "1", "--results", str(path)])
    document = json.loads(path.read_text())
    assert document["card"].startswith("CPU") and document["torch"] == torch.__version__
    assert {"driver", "diffusers", "transformers", "date", "commands", "settings"} <= document.keys()
    assert "--results" in document["commands"][0] and document["settings"]["steps"] == 3
    reference, fast = document["rows"]
    for row in (reference, fast):
        assert len(row["step_seconds"]) == 3 and row["seconds_min"] <= row["seconds"] <= row["seconds_max"]
        assert row["peak_gib"] is None and row["tflops"] > 0
    assert reference["ratio_to_a"] == 1.0
    assert fast["ratio_to_a"] == pytest.approx(reference["seconds"] / fast["seconds"])
    assert "(b) checkpointing on every block" in bench.render_table(dict(document, file=path.name))


def test_readme_table_is_the_rendering_of_the_newest_results():
    readme = bench.README.read_text()
    assert bench.TABLE_START in readme, "README lost its bench-table markers"
    assert readme == bench.render_readme(readme, bench.latest_results()), \
        "README's Performance table is stale: run `python -m kontext_teach bench --render-readme`"


def test_newest_results_file_wins_and_renders(tmp_path):
    document = bench.latest_results()
    for date, seconds in (("2026-01-01", 9.0), ("2027-01-01", 4.0)):
        rows = [dict(row, seconds=seconds) for row in document["rows"]]
        (tmp_path / f"{date}-card.json").write_text(json.dumps(dict(document, date=date, rows=rows)))
    newest = bench.latest_results(tmp_path)
    assert newest["date"] == "2027-01-01" and newest["file"] == "2027-01-01-card.json"
    assert "4.000 s/step" in bench.render_table(newest) and "9.000" not in bench.render_table(newest)
    with pytest.raises(ValueError, match="bench-table"):
        bench.render_readme("no markers here", newest)
    with pytest.raises(FileNotFoundError, match="no benchmark results"):
        bench.latest_results(tmp_path / "empty")


def test_results_summary_gives_every_size_and_variant():
    document = bench.latest_results()
    summary = bench.results_summary(document).splitlines()
    assert len(summary) == 1 + len(document["rows"]) and document["card"] in summary[0]
    for row, line in zip(sorted(document["rows"], key=lambda r: -r["side"]), summary[1:]):
        assert line.startswith(f"{row['side']}²") and f"{row['seconds']:.3f} s/step" in line


def test_results_path_does_not_overwrite(tmp_path):
    document = dict(card="NVIDIA H200", date="2026-11-27")
    first = bench.results_path(document, tmp_path)
    assert first.name == "2026-11-27-nvidia-h200.json"
    first.write_text("{}")
    assert bench.results_path(document, tmp_path).name == "2026-11-27-nvidia-h200-2.json"


def test_one_fast_variant_per_checkpoint_fraction(capsys):
    names = [v.name for v in bench.variants(torch.device("cpu"), [1.0, 0.5], compile_blocks=False)]
    assert names == ["(a) reference", "(b) kontext_teach ckpt 100%", "(b) kontext_teach ckpt 50%"]
    bench.main(["--size", "small", "--sides", "32", "--warmup", "0", "--steps", "1", "--compile", "no",
                "--checkpoint-fraction", "1", "0"])
    out = capsys.readouterr().out
    assert out.count("speed-up (a)/(b) kontext_teach ckpt") == 2


def test_checkpoint_fraction_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="shares of the blocks"):
        bench.variants(torch.device("cpu"), [1.5], compile_blocks=False)


def test_adopting_a_gpu_results_file_renders_the_readme(tmp_path, monkeypatch, capsys):
    results, readme = tmp_path / "results", tmp_path / "README.md"
    incoming = dict(bench.latest_results(), date="2030-01-02", card="Some GPU 80GB")
    monkeypatch.setattr(bench, "RESULTS_DIR", results)
    monkeypatch.setattr(bench, "README", readme)
    readme.write_text(f"# x\n{bench.TABLE_START}\nold\n{bench.TABLE_END}\nafter\n")
    (tmp_path / "bench.json").write_text(json.dumps(incoming))
    bench.main(["--adopt", str(tmp_path / "bench.json")])
    assert (results / "2030-01-02-some-gpu-80gb.json").exists()
    text = readme.read_text()
    assert "old" not in text and "Some GPU 80GB, 2030-01-02" in text and text.endswith("after\n")

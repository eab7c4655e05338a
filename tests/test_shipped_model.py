"""The shipped miniature: trained, recorded, small, and still able to edit."""

import json
import re

from kontext_teach.toy import edit_metric, toy_world
from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR

RECORD = json.loads((EMBEDDED_MODEL_DIR / "training_record.json").read_text())
REPORT = json.loads((EMBEDDED_MODEL_DIR / "evaluation.json").read_text())
FLOOR = 0.6  # edit accuracy on the fixed set below; see MEASURED
FAMILY_FLOOR = 0.3  # every trained family (2 of its 6 pairs)


def test_the_record_says_how_the_weights_were_made():
    args = RECORD["args"]
    for key in ("seed", "vae_minutes", "minutes", "heads", "double_blocks", "single_blocks", "text_length"):
        assert key in args
    runs = [RECORD]
    while isinstance(runs[-1].get("continued_from"), dict):
        runs.append(runs[-1]["continued_from"])
    assert any(run["vae"]["history"] for run in runs), "one run of the chain trained the VAE"
    assert runs[-1]["vae"]["psnr"] > 25
    assert RECORD["max_sequence_length"] in RECORD["text_lengths"]


def test_the_report_covers_every_trained_family():
    for key in ("heldout", "heldout_512"):
        assert {row["family"] for row in REPORT[key]["model"]} >= set(toy_world.BASE_FAMILIES)
    assert set(REPORT["drawn"]["model"]) >= set(toy_world.BASE_FAMILIES)


def test_the_shipped_weights_are_small():
    size = sum(f.stat().st_size for f in EMBEDDED_MODEL_DIR.rglob("*.safetensors"))
    assert size < 30 * 2**20, f"{size / 2**20:.1f} MiB of weights (student, teacher, VAE, text encoders)"


def test_vae_scaling_comes_from_data(pipe):
    config = pipe.vae.config
    assert (config.shift_factor, config.scaling_factor) == (RECORD["vae"]["shift_factor"], RECORD["vae"]["scaling_factor"])
    assert (config.shift_factor, config.scaling_factor) != (0.1159, 0.3611)


def test_the_shipped_weights_edit_held_out_pairs(pipe):
    pairs = toy_world.make_pairs("heldout", 24, start=500)  # fixed: 6 pairs of each base family
    evaluation = edit_metric.evaluate(pipe, pairs, steps=16, batch_size=24)
    model, copy = evaluation.row("model"), evaluation.row("copy")
    assert model.edit_accuracy >= FLOOR, edit_metric.format_table(evaluation)
    families = {row.family: row.edit_accuracy for row in evaluation.model if row.family in toy_world.BASE_FAMILIES}
    assert len(families) == len(toy_world.BASE_FAMILIES)
    assert min(families.values()) >= FAMILY_FLOOR, edit_metric.format_table(evaluation)
    assert model.psnr >= copy.psnr + 4, edit_metric.format_table(evaluation)
    assert copy.edit_accuracy == 0.0


def test_the_readme_quotes_the_measured_accuracies():
    readme = (EMBEDDED_MODEL_DIR.parents[2] / "README.md").read_text()
    quoted = re.search(r"recolours one shape right (\d+) % of the time, all\s+shapes (\d+) %, removes a shape (\d+) %, "
                       r"mirrors (\d+) %", readme)
    assert quoted, "README no longer quotes the miniature's accuracies"
    measured = {row["family"]: row["edit_accuracy"] for row in REPORT["heldout"]["model"]}
    expected = [round(100 * measured[f]) for f in ("recolour_one", "recolour_all", "remove", "mirror")]
    assert [int(x) for x in quoted.groups()] == expected

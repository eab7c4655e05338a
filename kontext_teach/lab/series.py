"""The map of the series: one line per notebook, in reading order."""

NOTEBOOKS = [
    ("00_overview", "The whole machine: one edit end to end, and the shape at every arrow"),
    ("01_image_preprocessing", "Preferred resolutions, aspect-ratio snapping, max_area and multiples of 16"),
    ("02_prompt_encoding", "CLIP's pooled vector and T5's sequence, truncation, text ids"),
    ("03_vae_latents", "The VAE posterior mode, shift and scale, 16 latent channels"),
    ("04_packing", "2x2 space-to-depth: latents to tokens and back"),
    ("05_position_ids_rope", "Position ids (virtual time, row, col) and 3-axis RoPE"),
    ("06_shift_schedule", "Sigmas, the resolution-dependent shift mu, timesteps, training densities"),
    ("07_transformer_forward", "Double- and single-stream blocks: the MMDiT forward pass from scratch"),
    ("08_sampling_loop", "The denoising loop by hand, guidance embedding versus true CFG"),
    ("09_lora_training", "Teach the miniature a new edit with a LoRA"),
    ("A1_mini_kontext", "Appendix: the toy editing world and how the miniature was trained"),
]


def series_map() -> str:
    """The series as text, one line per notebook."""
    return "\n".join(f"{name:<24} {summary}" for name, summary in NOTEBOOKS)

"""Load a FluxKontextPipeline: the embedded miniature, a local folder, or (if allowed) a hub id.

Nothing is downloaded unless the caller says so (``allow_download=True`` or
``KONTEXT_TEACH_ALLOW_DOWNLOAD=1``).
"""

import json
import logging
import os
import pathlib

import torch
from diffusers import FluxKontextPipeline

EMBEDDED_MODEL_DIR = pathlib.Path(__file__).parents[1] / "toy" / "embedded_model"
REQUIRED_COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
MODEL_ENV = "KONTEXT_TEACH_MODEL"
DOWNLOAD_ENV = "KONTEXT_TEACH_ALLOW_DOWNLOAD"
TRAINING_RECORD = "training_record.json"  # written by kontext_teach.toy.mini_training next to its weights
FULL_SIZE_TEXT_LENGTH = 512  # FLUX.1-Kontext-dev's T5 sequence (the pipeline's default and maximum)
UNSET_HINT = "leave the model unset (no --model on the command line, source=None in Python) for the embedded miniature"


class ModelSourceError(ValueError):
    """The model source cannot be loaded; the message says what to do."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str, embedded: bool) -> torch.dtype:
    """fp32 for the miniature and on CPU (exact comparisons); bf16 for real weights on a GPU."""
    return torch.bfloat16 if (device.startswith("cuda") and not embedded) else torch.float32


def check_model_folder(folder: pathlib.Path) -> None:
    """Raise ModelSourceError naming every missing piece of a diffusers-layout Kontext folder."""
    if not folder.is_dir():
        raise ModelSourceError(
            f"Model folder {folder} does not exist. Point at a local copy of FLUX.1-Kontext-dev "
            f"(e.g. `hf download black-forest-labs/FLUX.1-Kontext-dev --local-dir {folder}`), "
            f"or {UNSET_HINT}.")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelSourceError(
            f"{folder} has no model_index.json, so it is not a diffusers pipeline folder. "
            "Use the folder that `hf download black-forest-labs/FLUX.1-Kontext-dev --local-dir DIR` creates.")
    index = json.loads(index_file.read_text())
    missing = [name for name in REQUIRED_COMPONENTS if not (folder / name).is_dir()]
    not_listed = [name for name in REQUIRED_COMPONENTS if not index.get(name) or index[name][0] is None]
    if missing or not_listed:
        parts = []
        if missing:
            parts.append(f"missing sub-folders: {', '.join(missing)}")
        if not_listed:
            parts.append(f"model_index.json does not list: {', '.join(not_listed)}")
        raise ModelSourceError(
            f"{folder} is not a complete Kontext pipeline ({'; '.join(parts)}). "
            "Re-download it, or copy the missing components from FLUX.1-Kontext-dev.")


def looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~")) and not pathlib.Path(source).exists()


def download_allowed(allow_download: bool | None) -> bool:
    if allow_download is not None:
        return allow_download
    return os.environ.get(DOWNLOAD_ENV, "") not in ("", "0", "false", "False")


def load_pipeline(source: str | os.PathLike | None = None, *, device: str | None = None,
                  dtype: torch.dtype | None = None, allow_download: bool | None = None) -> FluxKontextPipeline:
    """Return a diffusers FluxKontextPipeline on ``device`` in ``dtype``.

    source: None -> ``$KONTEXT_TEACH_MODEL`` if set, else the embedded miniature;
    a folder -> a diffusers-layout Kontext (e.g. a FLUX.1-Kontext-dev snapshot);
    a hub id such as ``black-forest-labs/FLUX.1-Kontext-dev`` -> the local Hugging Face
    cache, or a download when ``allow_download`` (or ``$KONTEXT_TEACH_ALLOW_DOWNLOAD=1``).
    """
    source = resolve_source(source)
    embedded = source is None
    device = device or default_device()
    dtype = dtype or default_dtype(device, embedded)
    if embedded:
        pipe = FluxKontextPipeline.from_pretrained(EMBEDDED_MODEL_DIR, dtype=dtype, local_files_only=True)
    elif looks_like_hub_id(str(source)):
        pipe = _load_from_hub(str(source), dtype, download_allowed(allow_download))
    else:
        folder = pathlib.Path(source).expanduser()
        try:
            check_model_folder(folder)
        except ModelSourceError as error:
            raise ModelSourceError(f"{error}{from_environment(source)}") from None
        pipe = FluxKontextPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def resolve_source(source: str | os.PathLike | None) -> str | os.PathLike | None:
    """The model source load_pipeline uses: `source`, else $KONTEXT_TEACH_MODEL, else None (the miniature)."""
    return source if source is not None else (os.environ.get(MODEL_ENV) or None)


def from_environment(source) -> str:
    """A note for messages when the source came from $KONTEXT_TEACH_MODEL rather than the caller."""
    return f" (it comes from ${MODEL_ENV}; unset it for the embedded miniature)" if (
        os.environ.get(MODEL_ENV) and str(source) == os.environ[MODEL_ENV]) else ""


def training_record(source: str | os.PathLike | None = None) -> dict | None:
    """The miniature's training record in a model folder (None for a full-size model or a hub id)."""
    source = resolve_source(source)
    folder = EMBEDDED_MODEL_DIR if source is None else pathlib.Path(source).expanduser()
    record_file = folder / TRAINING_RECORD
    if not record_file.is_file():
        return None
    try:
        return json.loads(record_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelSourceError(f"{record_file} is not valid JSON ({error}); restore it from the run that "
                               "trained the model, or delete it if the folder holds a full-size model") from error


def trained_text_length(source: str | os.PathLike | None = None) -> int:
    """The T5 sequence length a model was trained with: the miniature's record says; full size is 512."""
    record = training_record(source)
    if record is None:
        return FULL_SIZE_TEXT_LENGTH
    length = record.get("max_sequence_length")
    if not isinstance(length, int) or not 1 <= length <= FULL_SIZE_TEXT_LENGTH:
        raise ModelSourceError(f"the training record of {source or EMBEDDED_MODEL_DIR} has no valid "
                               f"max_sequence_length (got {length!r}); pass --max-sequence-length explicitly")
    return length


class _NoTextEncoderLoraNote(logging.Filter):
    """Drops diffusers' "No LoRA keys associated to CLIPTextModel" warning, true of every transformer-only LoRA."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No LoRA keys associated to")


def load_lora(pipe: FluxKontextPipeline, folder, adapter_name: str | None = None) -> FluxKontextPipeline:
    """``pipe.load_lora_weights(folder)`` for a transformer-only LoRA (what the series' trainer writes),
    without diffusers' warning that the file holds no LoRA for the text encoder."""
    logger = logging.getLogger("diffusers.loaders.lora_base")
    quiet = _NoTextEncoderLoraNote()
    logger.addFilter(quiet)
    try:
        pipe.load_lora_weights(folder, adapter_name=adapter_name)
    finally:
        logger.removeFilter(quiet)
    return pipe


def _load_from_hub(hub_id: str, dtype: torch.dtype, allow_download: bool) -> FluxKontextPipeline:
    try:
        return FluxKontextPipeline.from_pretrained(hub_id, dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as cached_error:
        if not allow_download:
            raise ModelSourceError(
                f"{hub_id} is not in the local Hugging Face cache and downloads are off. Either download it "
                f"once (`hf download {hub_id} --local-dir ~/models/kontext`, about 58 GB, after accepting "
                "the licence on its model page) and pass that folder, or allow the download: --allow-download on "
                f"the command line, load_pipeline('{hub_id}', allow_download=True) in Python, or "
                f"{DOWNLOAD_ENV}=1.") from cached_error
    return FluxKontextPipeline.from_pretrained(hub_id, dtype=dtype)

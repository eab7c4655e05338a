"""Build the untrained miniature Kontext: tokenizers and seeded random weights.

    python -m kontext_teach.toy.build_embedded [--out DIR] [--seed N]

Writes a diffusers ``save_pretrained`` folder (transformer, vae, text_encoder,
text_encoder_2, tokenizer, tokenizer_2, scheduler), by default ``build/mini-kontext-init``.
``python -m kontext_teach.toy.mini_training --base build/mini-kontext-init ...`` then trains the
VAE and the transformer on the toy world and writes the pipeline that ships in
``kontext_teach/toy/embedded_model`` (``make embedded`` runs both; the shipped folder's
``training_record.json`` holds the exact arguments). Everything is reproducible:

* the CLIP tokenizer uses the real CLIP BPE vocabulary (49,408 tokens), read from the
  ``bpe_simple_vocab_16e6.txt.gz`` file that the ``open-clip-torch`` package carries
  (install it for the build only: ``pip install --no-deps open-clip-torch``);
* the T5 tokenizer is a sentencepiece unigram model trained on ``prompt_corpus()`` with
  T5's id layout (pad 0, eos 1, unk 2) and T5's 100 sentinel tokens;
* the networks are the real diffusers / transformers classes with the configs of
  ``miniature.py``, initialised from ``--seed``.

Needs ``sentencepiece`` (build only; the saved tokenizers load without it).
"""

import argparse
import gzip
import importlib.util
import io
import json
import pathlib
import tempfile

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from . import miniature
from .prompt_corpus import prompt_corpus

INIT_DIR = pathlib.Path("build") / "mini-kontext-init"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table (every byte gets a visible symbol)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clip_bpe_file() -> pathlib.Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise SystemExit("Building the CLIP tokenizer needs the BPE file of open-clip-torch: "
                         "pip install --no-deps open-clip-torch==3.3.0")
    return pathlib.Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


def clip_vocab_and_merges(bpe_gz: pathlib.Path) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary, built exactly as OpenAI's ``SimpleTokenizer`` builds it."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # 48,894 merges after the header line
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges


def build_clip_tokenizer() -> CLIPTokenizer:
    vocab, merges = clip_vocab_and_merges(clip_bpe_file())
    assert len(vocab) == miniature.CLIP_VOCAB_SIZE, len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = pathlib.Path(tmp, "vocab.json"), pathlib.Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file),
                                  model_max_length=miniature.CLIP_MAX_TOKENS)
    return tokenizer


def train_t5_pieces(vocab_size: int = miniature.T5_VOCAB_PIECES) -> list[tuple[str, float]]:
    """Sentencepiece unigram pieces and scores in T5's layout: <pad>=0, </s>=1, <unk>=2."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(prompt_corpus()), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        hard_vocab_limit=False, character_coverage=1.0, normalization_rule_name="identity", num_threads=1,
        input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]


def build_t5_tokenizer() -> T5Tokenizer:
    return T5Tokenizer(vocab=train_t5_pieces(), extra_ids=100, model_max_length=512)


def build_random_pipeline(seed: int = 0) -> FluxKontextPipeline:
    """The miniature with seeded random weights (each network from its own seed)."""
    tokenizer_2 = build_t5_tokenizer()
    t5_config = T5Config(**{**miniature.T5_ENCODER, "vocab_size": len(tokenizer_2)})

    def seeded(offset, make):
        torch.manual_seed(seed + offset)
        return make()

    return FluxKontextPipeline(
        transformer=seeded(1, lambda: FluxTransformer2DModel(**miniature.TRANSFORMER)),
        vae=seeded(2, lambda: AutoencoderKL(**miniature.VAE)),
        text_encoder=seeded(3, lambda: CLIPTextModel(CLIPTextConfig(**miniature.CLIP_TEXT))),
        text_encoder_2=seeded(4, lambda: T5EncoderModel(t5_config)),
        tokenizer=build_clip_tokenizer(),
        tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler(**miniature.SCHEDULER),
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=INIT_DIR, help=f"folder to write (default: {INIT_DIR})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    args = parser.parse_args(argv)
    pipe = build_random_pipeline(args.seed)
    pipe.save_pretrained(args.out, safe_serialization=True)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()

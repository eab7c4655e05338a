"""Does the VAE keep which shape is which, and does the transformer? Probes for the miniature's binding.

"Make the circle blue" can only be obeyed if the latents say which blob is the circle. This module
measures it: cut a window around every shape of held-out toy-world scenes, train a small classifier
(circle / square / triangle) on windows from training scenes, and score it on held-out ones. The same
probe reads three inputs:

* ``pixels``: the rendered picture, what any model could know (the probe's own ceiling);
* ``latents``: the VAE's ``latent_dist.mode()``, what the transformer reads (4 x 4 latent pixels);
* ``round_trip``: decode(encode(picture)), what the decoder can draw back.

Chance is 1/3. A VAE whose latents score near chance caps the miniature's recolour_one and remove
accuracy near "pick a shape at random", whatever the transformer learns.

A VAE that keeps the kinds apart does not mean the transformer does. ``probe_blocks`` asks the
transformer's own tokens: *linear* probes on the hidden state of each context token that a shape
covers most, after every block (and on the packed latents it starts from), say which kind of shape
it is, and, on the tokens of circles and squares, which of the two. A linear read-out is what the
joint attention can use: the instruction's shape word meets the tokens through dot products.

    python -m kontext_teach.toy.shape_probe kontext_teach/toy/embedded_model/vae
    python -m kontext_teach.toy.shape_probe kontext_teach/toy/embedded_model/vae --transformer \
        kontext_teach/toy/embedded_model/teacher_transformer
"""

import argparse
import dataclasses
import math
import pathlib

import numpy as np
import torch
from diffusers import AutoencoderKL

from . import toy_world
from ..lab.harness import silence_libraries
from .edit_metric import TEXT_LENGTH
from .perception import CLASSES, kind_shares

PIXEL_WINDOW = 32  # pixels around a shape's centre (shapes span at most 2 * BOUND * 0.17 * 64 = 25 px)
LATENT_FACTOR = 8  # the VAE's downsampling: 4 levels, as FLUX
LATENT_WINDOW = PIXEL_WINDOW // LATENT_FACTOR


@dataclasses.dataclass(frozen=True)
class ShapeProbe:
    """Held-out accuracy of the shape-kind probe on each input, and the VAE's round-trip PSNR (dB)."""
    pixels: float
    latents: float
    round_trip: float
    psnr: float
    shapes: int  # held-out shapes scored

    def summary(self) -> str:
        return (f"shape kind from pixels {self.pixels:.2f}, from latents {self.latents:.2f}, "
                f"from the round trip {self.round_trip:.2f} (chance 0.33; {self.shapes} held-out shapes; "
                f"round-trip PSNR {self.psnr:.1f} dB)")


def window_corner(centre: float, window: int, side: int) -> int:
    """Top-left index of a `window`-wide crop centred on `centre` (in cells), kept inside [0, side)."""
    return int(np.clip(round(centre) - window // 2, 0, side - window))


def shape_windows(images: torch.Tensor, scenes, cell: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One flattened crop per shape, centred on it, and its kind's index.

    images: [B, C, H, W], cells of `cell` pixels (1 for pictures, 8 for latents); scenes: B toy_world.Scene.
    Returns ([N, C * window * window], [N]) with N the number of shapes in all scenes."""
    crops, kinds = [], []
    side = images.shape[-1]
    for image, scene in zip(images, scenes):
        for shape in scene.shapes:
            top = window_corner(shape.y / cell, window, side)
            left = window_corner(shape.x / cell, window, side)
            crops.append(image[:, top:top + window, left:left + window].reshape(-1))  # [C * window * window]
            kinds.append(toy_world.KINDS.index(shape.kind))
    return torch.stack(crops), torch.tensor(kinds)


def kind_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                        test_y: torch.Tensor, steps: int = 1500, hidden: int = 256, seed: int = 0) -> float:
    """Train a one-hidden-layer classifier on standardised features (minibatches of 128, AdamW); its accuracy
    on the test set."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = torch.nn.Sequential(torch.nn.Linear(train_x.shape[1], hidden), torch.nn.GELU(),
                                         torch.nn.Linear(hidden, len(toy_world.KINDS)))
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-3, weight_decay=1e-2)
    return fitted_accuracy(classifier, optimizer, train_x, train_y, test_x, test_y, steps, batch=128,
                           generator=torch.Generator().manual_seed(seed))


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor, steps: int = 300, lr: float = 1e-2, seed: int = 0) -> float:
    """Train a linear classifier on standardised features (full batch, Adam); its accuracy on the test set."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = torch.nn.Linear(train_x.shape[1], int(train_y.max()) + 1)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    return fitted_accuracy(classifier, optimizer, train_x, train_y, test_x, test_y, steps)


def fitted_accuracy(classifier: torch.nn.Module, optimizer, train_x: torch.Tensor, train_y: torch.Tensor,
                    test_x: torch.Tensor, test_y: torch.Tensor, steps: int, batch: int | None = None,
                    generator: torch.Generator | None = None) -> float:
    """Fit `classifier` on the standardised training features (cross-entropy; random minibatches of `batch`,
    or the full set), then its accuracy on the test features, standardised the same way."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-4
    with torch.enable_grad():  # also when called under no_grad, as miniature_report measures
        for _ in range(steps):
            index = torch.randint(len(train_x), (batch,), generator=generator) if batch else slice(None)
            loss = torch.nn.functional.cross_entropy(classifier((train_x[index] - mean) / std), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = classifier((test_x - mean) / std).argmax(1)
    return float((predicted == test_y).float().mean())


def scenes_and_pictures(split: str, count: int) -> tuple[list, torch.Tensor]:
    """`count` source scenes of a split and their pictures, [count, 3, 64, 64] in [-1, 1]."""
    pairs = toy_world.make_pairs(split, count, families=("recolour_all",))  # recolour_all accepts every scene
    pixels = np.stack([np.asarray(pair.source) for pair in pairs])  # [count, 64, 64, 3] uint8
    pictures = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    return [pair.source_scene for pair in pairs], pictures


@torch.no_grad()
def encode_and_decode(vae: AutoencoderKL, pictures: torch.Tensor, batch: int = 64):
    """(latents [B, 16, H/8, W/8], round trip [B, 3, H, W]) through the mode of the latent distribution."""
    latents, decoded = [], []
    for start in range(0, len(pictures), batch):
        mode = vae.encode(pictures[start:start + batch]).latent_dist.mode()
        latents.append(mode)
        decoded.append(vae.decode(mode).sample.clamp(-1, 1))
    return torch.cat(latents), torch.cat(decoded)


def probe_vae(vae: AutoencoderKL, train_scenes: int = 1500, heldout_scenes: int = 400,
              steps: int = 1500) -> ShapeProbe:
    """The shape-kind probe on pixels, latents and round trip (train on train scenes, score held-out ones)."""
    if train_scenes < 10 or heldout_scenes < 10:
        raise ValueError(f"the probe needs at least 10 scenes in each split; got {train_scenes} and {heldout_scenes}")
    vae = vae.float().eval()
    inputs = {}
    for split, count in (("train", train_scenes), ("heldout", heldout_scenes)):
        scenes, pictures = scenes_and_pictures(split, count)
        latents, round_trip = encode_and_decode(vae, pictures)
        inputs[split] = {"pixels": shape_windows(pictures, scenes, 1, PIXEL_WINDOW),
                         "latents": shape_windows(latents, scenes, LATENT_FACTOR, LATENT_WINDOW),
                         "round_trip": shape_windows(round_trip, scenes, 1, PIXEL_WINDOW)}
        if split == "heldout":
            psnr = 10 * math.log10(4 / float((round_trip - pictures).pow(2).mean()))
    accuracy = {name: kind_probe_accuracy(*inputs["train"][name], *inputs["heldout"][name], steps=steps)
                for name in ("pixels", "latents", "round_trip")}
    return ShapeProbe(**{k: round(v, 3) for k, v in accuracy.items()}, psnr=round(psnr, 2),
                      shapes=len(inputs["heldout"]["pixels"][1]))


# --- the transformer's tokens ----------------------------------------------------------------

MIN_KIND_SHARE = 0.1  # a token is labelled with the kind covering most of it, if that covers at least this much
LOOK_ALIKES = ("circle", "square")


@dataclasses.dataclass(frozen=True)
class BlockProbe:
    """Held-out accuracy of linear per-token probes at each stage of the transformer, on the context tokens
    that a shape covers most: which of the three kinds, and circle or square among the look-alikes' tokens."""
    stages: tuple[str, ...]  # "latents" (the packed input tokens), then "double 0", ..., "single 0", ...
    kinds: tuple[float, ...]  # circle / square / triangle on every shape token (chance about 1/3)
    look_alikes: tuple[float, ...]  # circle / square on the tokens those two cover most (chance about 1/2)
    tokens: int  # held-out circle and square tokens scored

    def summary(self) -> str:
        lines = [f"{stage:>9}: which kind {kind:.2f}, circle or square {look:.2f}"
                 for stage, kind, look in zip(self.stages, self.kinds, self.look_alikes)]
        return "\n".join([f"linear probes per context token, after each block ({self.tokens} held-out circle "
                          f"and square tokens)", *lines])


def token_labels(scenes, grid: tuple[int, int]) -> torch.Tensor:
    """[N, rows * cols] index in perception.CLASSES of what covers most of each packed token (background when
    no shape covers at least MIN_KIND_SHARE of it)."""
    shares = torch.stack([kind_shares(scene, grid) for scene in scenes])  # [N, L, 4]
    kind_share, kind = shares[..., 1:].max(dim=-1)  # [N, L]
    return torch.where(kind_share >= MIN_KIND_SHARE, kind + 1, torch.zeros_like(kind))


@torch.no_grad()
def block_states(transformer, data, sigma: float, guidance: float, batch: int = 64, seed: int = 0) -> dict:
    """{stage: [N, Lc, D]} the context tokens entering the transformer and after each block, on a noisy target
    at noise level `sigma` (the same noise for every transformer), with each pair's own instruction."""
    from .mini_training import predict_target_velocity  # the training's own forward pass
    from ..position_ids import kontext_image_ids, text_ids
    from ..training.timestep_sampling import noisy_latents
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    stages = [f"double {i}" for i in range(len(transformer.transformer_blocks))] + \
             [f"single {i}" for i in range(len(transformer.single_transformer_blocks))]
    context = data.sources.shape[1]
    states = {"latents": [data.sources]}
    hooks = [block.register_forward_hook(
        lambda module, args, output, stage=stage: states.setdefault(stage, []).append(output[1][:, -context:]))
        for block, stage in zip(blocks, stages)]
    generator = torch.Generator().manual_seed(seed)
    img_ids, txt_ids = kontext_image_ids(data.grid, data.grid), text_ids(data.prompt_embeds.shape[1])
    try:
        for start in range(0, len(data.targets), batch):
            rows = data.prompt_index[start:start + batch]
            x0 = data.targets[start:start + batch]
            sigmas = torch.full((len(x0),), sigma)
            noise = torch.randn(x0.shape, generator=generator)
            predict_target_velocity(transformer, noisy_latents(x0, noise, sigmas), data.sources[start:start + batch],
                                    data.prompt_embeds[rows], data.pooled_embeds[rows], sigmas,
                                    torch.full((len(x0),), guidance), img_ids, txt_ids)
    finally:
        for hook in hooks:
            hook.remove()
    return {stage: torch.cat(parts).float() for stage, parts in states.items()}


def probe_blocks(pipe, train_pairs: int = 800, heldout_pairs: int = 300, sigma: float = 0.9,
                 guidance: float = 1.0, steps: int = 300, text_length: int = TEXT_LENGTH) -> BlockProbe:
    """Train a linear per-token kind probe on the context tokens of training scenes at every stage of
    `pipe`'s transformer (fed by its VAE and text encoders); score it on held-out scenes."""
    from .mini_training import prepare_data
    if train_pairs < 10 or heldout_pairs < 10:
        raise ValueError(f"the probe needs at least 10 pairs in each split; got {train_pairs} and {heldout_pairs}")
    transformer = pipe.transformer.float().eval()
    inputs = {}
    for split, count in (("train", train_pairs), ("heldout", heldout_pairs)):
        pairs = toy_world.make_pairs(split, count, families=("recolour_one", "remove"))
        data = prepare_data(pipe, pipe.vae, pairs, text_length, torch.device("cpu"))
        states = block_states(transformer, data, sigma, guidance)
        labels = token_labels([pair.source_scene for pair in pairs], data.grid).reshape(-1)  # [N * Lc]
        inputs[split] = ({stage: value.reshape(len(labels), -1) for stage, value in states.items()}, labels)
    (train, train_y), (test, test_y) = inputs["train"], inputs["heldout"]
    look_alike = torch.tensor([CLASSES.index(kind) for kind in LOOK_ALIKES])
    shaped, shaped_test = train_y > 0, test_y > 0
    similar, similar_test = torch.isin(train_y, look_alike), torch.isin(test_y, look_alike)
    is_second = lambda labels: (labels == look_alike[1]).long()  # circle 0, square 1
    kinds, looks = [], []
    for stage in train:
        kinds.append(linear_probe_accuracy(train[stage][shaped], train_y[shaped] - 1, test[stage][shaped_test],
                                           test_y[shaped_test] - 1, steps=steps))
        looks.append(linear_probe_accuracy(train[stage][similar], is_second(train_y[similar]),
                                           test[stage][similar_test], is_second(test_y[similar_test]), steps=steps))
    return BlockProbe(tuple(train), tuple(round(k, 3) for k in kinds), tuple(round(k, 3) for k in looks),
                      int(similar_test.sum()))

def main(argv=None) -> ShapeProbe:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vae", help="a VAE folder (AutoencoderKL.from_pretrained), e.g. MODEL/vae")
    parser.add_argument("--train-scenes", type=int, default=1500)
    parser.add_argument("--heldout-scenes", type=int, default=400)
    parser.add_argument("--steps", type=int, default=1500, help="probe training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--transformer", default=None,
                        help="also probe this transformer folder's context tokens after every block")
    parser.add_argument("--base", default=None,
                        help="pipeline folder with the text encoders for --transformer (default: the VAE's parent)")
    parser.add_argument("--train-pairs", type=int, default=800, help="training pairs of the block probe")
    parser.add_argument("--heldout-pairs", type=int, default=300, help="held-out pairs of the block probe")
    parser.add_argument("--sigma", type=float, default=0.9, help="noise level of the target tokens")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="guidance input (1 for a CFG teacher, e.g. 2.5 for a distilled student)")
    args = parser.parse_args(argv)
    silence_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        vae = AutoencoderKL.from_pretrained(args.vae)
    except (OSError, ValueError) as error:
        raise SystemExit(f"no VAE at {args.vae!r} ({error}); pass a folder with config.json and "
                         f"diffusion_pytorch_model.safetensors, e.g. kontext_teach/toy/embedded_model/vae")
    result = probe_vae(vae, args.train_scenes, args.heldout_scenes, args.steps)
    print(result.summary())
    if args.transformer:
        print(probe_blocks(load_probe_pipeline(args.base or pathlib.Path(args.vae).parent, vae, args.transformer),
                           train_pairs=args.train_pairs, heldout_pairs=args.heldout_pairs, sigma=args.sigma,
                           guidance=args.guidance).summary())
    return result


def load_probe_pipeline(base, vae: AutoencoderKL, transformer_folder):
    """The pipeline at `base` (text encoders, tokenizers) with `vae` and the transformer at `transformer_folder`,
    in float32; a clear SystemExit when a folder is missing."""
    from diffusers import FluxKontextPipeline, FluxTransformer2DModel
    try:
        transformer = FluxTransformer2DModel.from_pretrained(transformer_folder, torch_dtype=torch.float32)
        return FluxKontextPipeline.from_pretrained(base, vae=vae.float(), transformer=transformer,
                                                   torch_dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError) as error:
        raise SystemExit(f"could not load the transformer {str(transformer_folder)!r} with the pipeline "
                         f"{str(base)!r} ({error}); pass --transformer MODEL/transformer and, if the VAE folder "
                         f"is not inside a pipeline folder, --base MODEL") from None


if __name__ == "__main__":
    main()

"""Does the VAE keep which shape is which? A probe for the miniature's binding ceiling.

"Make the circle blue" can only be obeyed if the latents say which blob is the circle. This module
measures it: cut a window around every shape of held-out toy-world scenes, train a small classifier
(circle / square / triangle) on windows from training scenes, and score it on held-out ones. The same
probe reads three inputs:

* ``pixels``: the rendered picture, what any model could know (the probe's own ceiling);
* ``latents``: the VAE's ``latent_dist.mode()``, what the transformer reads (4 x 4 latent pixels);
* ``round_trip``: decode(encode(picture)), what the decoder can draw back.

Chance is 1/3. A VAE whose latents score near chance caps the miniature's recolour_one and remove
accuracy near "pick a shape at random", whatever the transformer learns.

    python -m kontext_teach.toy.shape_probe kontext_teach/toy/embedded_model/vae
"""

import argparse
import dataclasses
import math

import numpy as np
import torch
from diffusers import AutoencoderKL

from . import toy_world

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
    """Train a one-hidden-layer classifier on standardised features; its accuracy on the test set."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-4
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = torch.nn.Sequential(torch.nn.Linear(train_x.shape[1], hidden), torch.nn.GELU(),
                                         torch.nn.Linear(hidden, len(toy_world.KINDS)))
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(steps):
        batch = torch.randint(len(train_x), (128,), generator=generator)
        loss = torch.nn.functional.cross_entropy(classifier((train_x[batch] - mean) / std), train_y[batch])
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


def main(argv=None) -> ShapeProbe:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vae", help="a VAE folder (AutoencoderKL.from_pretrained), e.g. MODEL/vae")
    parser.add_argument("--train-scenes", type=int, default=1500)
    parser.add_argument("--heldout-scenes", type=int, default=400)
    parser.add_argument("--steps", type=int, default=1500, help="probe training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        vae = AutoencoderKL.from_pretrained(args.vae)
    except (OSError, ValueError) as error:
        raise SystemExit(f"no VAE at {args.vae!r} ({error}); pass a folder with config.json and "
                         f"diffusion_pytorch_model.safetensors, e.g. kontext_teach/toy/embedded_model/vae")
    result = probe_vae(vae, args.train_scenes, args.heldout_scenes, args.steps)
    print(result.summary())
    return result


if __name__ == "__main__":
    main()

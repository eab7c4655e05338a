"""The VAE step: an image becomes the 16-channel latents the transformer sees, and back.

    encode:  image [B, 3, H, W] in [-1, 1]
             -> encoder -> moments [B, 2C, H/f, W/f]          (f = 2 ** (levels - 1) = 8)
             -> mean, logvar (clamped to [-30, 20])           the posterior N(mean, exp(logvar))
             -> mode = mean                                    what Kontext uses for its condition
             -> (mean - shift_factor) * scaling_factor        [B, C, H/f, W/f]
    decode:  latents / scaling_factor + shift_factor -> decoder -> image [B, 3, H, W]

The encoder and decoder networks are diffusers' (``vae.encoder``, ``vae.decoder``); what
happens around them is rebuilt here and checked against ``AutoencoderKL.encode``,
``DiagonalGaussianDistribution`` and ``FluxKontextPipeline.prepare_latents``.
"""

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image, ImageDraw

LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps log-variance here
VIEWS = ("mode", "sample", "std")


def vae_scale_factor(vae_config) -> int:
    """How many pixels one latent pixel covers per side: 2 ** (number of resolution levels - 1).

    Every level but the last halves the resolution once, so 4 levels (FLUX) give 8.
    """
    return 2 ** (len(vae_config.block_out_channels) - 1)


def latent_shape(vae_config, batch_size: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The shape of the latents of a [batch_size, 3, height, width] image: [B, C, H/f, W/f]."""
    factor = vae_scale_factor(vae_config)
    check_image_size(height, width, factor)
    return batch_size, vae_config.latent_channels, height // factor, width // factor


def check_image_size(height: int, width: int, factor: int) -> None:
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ValueError(
            f"image size {height}x{width} (height x width) must be a positive multiple of {factor}, the VAE's "
            f"down-sampling factor (16 if the latents will be packed 2x2 for the transformer); resize or crop it, "
            f"e.g. to {max(factor, height // factor * factor)}x{max(factor, width // factor * factor)}")


def check_vae_images(images: torch.Tensor, factor: int) -> None:
    """Raise a ValueError that says what to do unless ``images`` is a [B, 3, H, W] batch in [-1, 1]."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"expected an image batch [B, 3, H, W], got {shape}; a PIL image becomes one with "
                         "pipe.image_processor.preprocess(image, height, width)")
    check_image_size(images.shape[2], images.shape[3], factor)
    if images.device.type == "meta":  # shapes only, no values to check
        return
    low, high = images.min().item(), images.max().item()
    if low < -1.0 or high > 1.0:
        raise ValueError(f"pixel values must lie in [-1, 1] (got {low:.3g} .. {high:.3g}); map 0..255 pixels "
                         "with x / 127.5 - 1, or clamp a decoded image with images.clamp(-1, 1)")


@dataclass(frozen=True)
class Posterior:
    """The encoder's answer for every latent pixel: a diagonal Gaussian N(mean, exp(logvar))."""

    mean: torch.Tensor  # [B, C, h, w]
    logvar: torch.Tensor  # [B, C, h, w], clamped to LOGVAR_RANGE

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        """The most likely latent: the mean. Deterministic: the same image always gives the same latent."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * eps, eps ~ N(0, 1): a different latent for every draw."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)


def encoder_moments(vae, images: torch.Tensor) -> torch.Tensor:
    """Run the encoder network: [B, 3, H, W] -> [B, 2C, H/f, W/f] (mean and log-variance stacked)."""
    check_vae_images(images, vae_scale_factor(vae.config))
    moments = vae.encoder(images)  # [B, 2C, h, w]
    if vae.quant_conv is not None:  # a 1x1 conv in SD's VAE; FLUX has none (use_quant_conv=False)
        moments = vae.quant_conv(moments)
    return moments


def split_moments(moments: torch.Tensor) -> Posterior:
    """[B, 2C, h, w] -> Posterior: the first C channels are the mean, the last C the log-variance."""
    mean, logvar = moments.chunk(2, dim=1)  # [B, C, h, w] each
    return Posterior(mean=mean, logvar=logvar.clamp(*LOGVAR_RANGE))


def encode_posterior(vae, images: torch.Tensor) -> Posterior:
    """Image batch in [-1, 1] -> the posterior over its latents (unscaled)."""
    return split_moments(encoder_moments(vae, images))


def scale_latents(latents: torch.Tensor, shift_factor: float, scaling_factor: float) -> torch.Tensor:
    """VAE latents -> transformer latents: (z - shift_factor) * scaling_factor."""
    return (latents - shift_factor) * scaling_factor


def unscale_latents(latents: torch.Tensor, shift_factor: float, scaling_factor: float) -> torch.Tensor:
    """Transformer latents -> VAE latents: z / scaling_factor + shift_factor (inverse of scale_latents)."""
    return latents / scaling_factor + shift_factor


def encode_image_latents(vae, images: torch.Tensor, *, sample: bool = False,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """What Kontext feeds the transformer for a condition image, before packing: [B, C, H/f, W/f].

    sample=False (the pipeline's choice) takes the posterior mode; sample=True draws from it.
    """
    posterior = encode_posterior(vae, images)
    latents = posterior.sample(generator) if sample else posterior.mode()  # [B, C, h, w]
    return scale_latents(latents, vae.config.shift_factor, vae.config.scaling_factor)


def decode_image_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Transformer latents [B, C, h, w] -> image [B, 3, h*f, w*f], roughly in [-1, 1] (not clamped)."""
    if latents.ndim != 4 or latents.shape[1] != vae.config.latent_channels:
        raise ValueError(f"expected unpacked latents [B, {vae.config.latent_channels}, h, w], got "
                         f"{tuple(latents.shape)}; packed tokens [B, L, 64] go through "
                         "kontext_teach.packing.unpack_latents first")
    z = unscale_latents(latents, vae.config.shift_factor, vae.config.scaling_factor)
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)
    return vae.decoder(z)  # [B, 3, H, W]


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped: how the pipeline turns a decoded image into pixels."""
    return (images / 2 + 0.5).clamp(0, 1)


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> numpy [B, H, W, 3] in [0, 1], ready for plt.imshow."""
    return to_unit_range(images.detach()).permute(0, 2, 3, 1).cpu().float().numpy()


def draw_shapes_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A small synthetic RGB picture: a sky-to-grass background, a sun, a house, a tree, a pond.

    seed=0 gives the standard layout; other seeds move and recolour the shapes (for batches).
    """
    if width < 16 or height < 16:
        raise ValueError(f"draw_shapes_image needs at least 16x16 pixels to draw its shapes, got {width}x{height}")
    rng = np.random.default_rng(seed)
    jitter = (lambda: 0.0) if seed == 0 else (lambda: float(rng.uniform(-0.08, 0.08)))
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    horizon = int(height * (0.62 + jitter()))
    for y in range(height):  # vertical gradient: sky above the horizon, grass below
        t = y / max(horizon, 1) if y < horizon else (y - horizon) / max(height - horizon, 1)
        sky, grass = (int(120 + 80 * t), int(170 + 60 * t), 235), (int(70 - 30 * t), int(150 - 50 * t), 60)
        colour = sky if y < horizon else grass
        draw.line([(0, y), (width, y)], fill=colour)

    def box(cx, cy, rx, ry):  # relative centre and radii -> pixel box
        cx, cy = (cx + jitter()) * width, (cy + jitter()) * height
        return [cx - rx * width, cy - ry * height, cx + rx * width, cy + ry * height]

    sun = (250, 210, 60) if seed == 0 else tuple(int(c) for c in rng.integers(120, 256, 3))
    draw.ellipse(box(0.8, 0.2, 0.09, 0.09 * width / height), fill=sun)
    wall = box(0.3, 0.58, 0.13, 0.16)
    draw.rectangle(wall, fill=(200, 60, 50) if seed == 0 else tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw.polygon([(wall[0] - 0.03 * width, wall[1]), (wall[2] + 0.03 * width, wall[1]),
                  ((wall[0] + wall[2]) / 2, wall[1] - 0.2 * height)], fill=(110, 50, 40))
    draw.rectangle([wall[0] + 0.4 * (wall[2] - wall[0]), wall[1] + 0.45 * (wall[3] - wall[1]),
                    wall[0] + 0.6 * (wall[2] - wall[0]), wall[3]], fill=(60, 40, 30))
    trunk_x = (0.62 + jitter()) * width
    draw.rectangle([trunk_x - 0.015 * width, 0.5 * height, trunk_x + 0.015 * width, 0.75 * height], fill=(90, 60, 30))
    draw.ellipse([trunk_x - 0.08 * width, 0.3 * height, trunk_x + 0.08 * width, 0.55 * height], fill=(30, 110, 40))
    draw.ellipse(box(0.75, 0.86, 0.14, 0.06), fill=(40, 90, 200))
    return image


def posterior_spread(posterior: Posterior) -> dict[str, float]:
    """How big the noise of .sample() is next to the differences between latent pixels.

    mean_spread: standard deviation of the means over all latent pixels and channels;
    typical_std: the posterior standard deviation, averaged; ratio: typical_std / mean_spread.
    """
    mean_spread = posterior.mean.float().std().item()
    typical_std = posterior.std.float().mean().item()
    return dict(mean_spread=mean_spread, typical_std=typical_std, ratio=typical_std / mean_spread)


def channel_view(posterior: Posterior, channel: int, view: str = "mode", seed: int = 0, item: int = 0) -> torch.Tensor:
    """One latent channel of one image as a 2-D map [h, w]: its mode, a sample (drawn with ``seed``), or its std."""
    channels = posterior.mean.shape[1]
    if not 0 <= channel < channels:
        raise ValueError(f"channel must be in 0..{channels - 1}, got {channel}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if view == "mode":
        maps = posterior.mode()
    elif view == "sample":
        maps = posterior.sample(torch.Generator(device=posterior.mean.device).manual_seed(seed))
    else:
        maps = posterior.std
    return maps[item, channel]  # [h, w]


def symmetric_limit(tensor: torch.Tensor) -> float:
    """A colour range centred on 0 that covers the tensor: max |value|."""
    return max(tensor.detach().abs().max().item(), 1e-6)


def plot_channels(latents: torch.Tensor, title: str, columns: int = 4, limit: float | None = None):
    """Every channel of one latent [C, h, w] as a small image, one shared colour scale centred on 0."""
    channels = latents.shape[0]
    rows = -(-channels // columns)
    limit = limit or symmetric_limit(latents)
    aspect = latents.shape[1] / latents.shape[2]
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns + 1, (2.4 * aspect + 0.35) * rows + 0.5),
                             squeeze=False, layout="constrained")
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < channels:
            shown = ax.imshow(latents[index].detach().cpu(), cmap="RdBu_r", vmin=-limit, vmax=limit,
                              interpolation="nearest")
            ax.set_title(f"channel {index}", fontsize=8)
    fig.colorbar(shown, ax=axes, shrink=0.6, label="latent value")
    fig.suptitle(title)
    return fig


def plot_channel_view(posterior: Posterior, channel: int, view: str = "mode", seed: int = 0, item: int = 0):
    """The widget's picture: one channel as mode, sample or std, on the colour scale of that channel's mode."""
    shown = channel_view(posterior, channel, view, seed, item)
    mode = channel_view(posterior, channel, "mode", item=item)
    limit = symmetric_limit(mode) if view != "std" else max(shown.max().item(), 1e-6)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    image = ax.imshow(shown.detach().cpu(), cmap="RdBu_r" if view != "std" else "magma",
                      vmin=-limit if view != "std" else 0, vmax=limit, interpolation="nearest")
    fig.colorbar(image, ax=ax)
    label = f"{view} (seed {seed})" if view == "sample" else view
    ax.set_title(f"channel {channel}: {label}")
    ax.axis("off")
    return fig



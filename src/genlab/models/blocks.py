"""Building blocks shared by the model files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, check_widths
from ..data import NUM_CLASSES
from ..errors import GenlabError

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28


def mlp(sizes: list[int] | tuple[int, ...], activation: type[nn.Module] = nn.ReLU, **act_kwargs) -> nn.Sequential:
    """Linear layers of the given sizes with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation(**act_kwargs))
    return nn.Sequential(*layers)


class Flatten(nn.Module):
    """(B, 1, 28, 28) -> (B, 784)."""

    def forward(self, x):
        return x.flatten(1)


class Unflatten(nn.Module):
    """(B, 784) -> (B, 1, 28, 28)."""

    def forward(self, x):
        return x.view(-1, *IMAGE_SHAPE)


# --- convolutional builders for 28×28 images (AE, VAE, CVAE, AAE, DCGAN, WGAN-GP, CGAN) -------
# Two stride-2 convolutions take 28×28 to 7×7 and two stride-2 transposed convolutions take 7×7
# back to 28×28 (kernel 4, padding 1: an even overlap, so fewer checkerboard artefacts than
# kernel 3; Radford et al. 2016, https://arxiv.org/abs/1511.06434) for the GANs; the autoencoders
# use `AE_KERNEL` (below). Channel counts are small on purpose: these run on a 2-core CPU in the
# lab budget.

FEATURE_SIDE = 7  # 28 -> 14 -> 7 after two stride-2 convolutions
# Default kernel of the autoencoders' convolutions (their `kernel` field): 3 runs more images per
# CPU second than 4 and gave better samples at the same CPU time (benchmarks/README.md, "VAE architecture").
AE_KERNEL = 3


def _same_halving(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 convolution halve 28 -> 14 -> 7 and the
    transposed convolution double back, for kernel 3, 4 or 5."""
    return (kernel - 1) // 2, kernel % 2


# Hidden-layer activations of the autoencoders (`activation` field). SiLU (x·sigmoid(x), Elfwing
# et al. 2018, https://arxiv.org/abs/1702.03118) is smooth where ReLU has a kink; it is the conv
# VAE's default (benchmarks/README.md, "VAE architecture"), "relu" the notebook's.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}
Activation = Literal["relu", "silu"]


def activation_layer(name: str, leaky_slope: float = 0.0) -> nn.Module:
    """One activation module: "silu" -> SiLU; "relu" -> ReLU, or leaky ReLU when `leaky_slope`
    > 0 (the conv features' DCGAN-style leaky ReLU)."""
    if name == "relu" and leaky_slope > 0:
        return nn.LeakyReLU(leaky_slope)
    return ACTIVATIONS[name]()


def _norm2d(kind: str | None, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":  # per-example normalisation: allowed in a WGAN-GP critic, batch norm is not
        return [nn.GroupNorm(1, channels)]
    return []


class Dropout(nn.Module):
    """nn.Dropout's math (each value zeroed with probability p, the rest scaled by 1/(1 − p)),
    its mask drawn as uniform numbers ≥ p and kept as bytes: forward and backward run 1.5–1.7×
    faster on a CPU than F.dropout, whose float mask from `bernoulli_` was 14% of scgan's step
    (benchmarks/README.md, "One generator pass per GAN step"). Same global generator, so seeded
    runs repeat; other random numbers than nn.Dropout's."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p  # float32 uniforms also under autocast
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def conv_features(
    channels: tuple[int, int] = (32, 64),
    norm: str | None = None,
    slope: float = 0.2,
    dropout: float = 0.0,
    kernel: int = 4,
    activation: str = "relu",
) -> nn.Sequential:
    """(B, 1, 28, 28) -> (B, channels[1]·7·7): two stride-2 convolutions with leaky ReLU
    (`activation` "relu"; "silu": SiLU).

    `norm`: None, "batch" or "layer", applied after the second convolution (never the first,
    as in DCGAN: normalising the input layer hurts). `dropout` after each activation (a GAN
    discriminator on few images: it slows D's memorising).
    """
    c1, c2 = channels
    pad, _ = _same_halving(kernel)
    drop = [Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(
        nn.Conv2d(1, c1, kernel, stride=2, padding=pad),  # (B, c1, 14, 14)
        activation_layer(activation, slope),
        *drop,
        nn.Conv2d(c1, c2, kernel, stride=2, padding=pad),  # (B, c2, 7, 7)
        *_norm2d(norm, c2),
        activation_layer(activation, slope),
        *drop,
        nn.Flatten(),  # (B, c2·49)
    )


def conv_encoder(
    out_dim: int,
    channels: tuple[int, int] = (32, 64),
    norm: str | None = None,
    hidden: tuple[int, ...] = (),
    kernel: int = 4,
    activation: str = "relu",
) -> nn.Sequential:
    """(B, 1, 28, 28) -> (B, out_dim): conv features, then fully connected layers of widths
    `hidden` (ReLU or SiLU between, per `activation`) and a linear head."""
    return nn.Sequential(
        conv_features(channels, norm, kernel=kernel, activation=activation),
        mlp([channels[1] * FEATURE_SIDE**2, *hidden, out_dim], ACTIVATIONS[activation]),
    )


def conv_decoder(
    in_dim: int,
    channels: tuple[int, int] = (32, 64),
    batch_norm: bool = False,
    hidden: tuple[int, ...] = (),
    kernel: int = 4,
    activation: str = "relu",
) -> nn.Sequential:
    """(B, in_dim) -> pixel logits (B, 1, 28, 28); mirrors `conv_encoder` with the same
    `channels` and `hidden` (a small code needs a hidden layer or two before the feature map:
    one linear map from a 2-D code to 7×7 feature maps draws poorly).

    `batch_norm` after each layer: DCGAN's generator stabiliser; off for autoencoders,
    whose reconstructions should not depend on the other images in the batch. `activation`:
    "relu" or "silu" after each hidden layer.
    """
    c1, c2 = channels
    act = ACTIVATIONS[activation]
    pad, out_pad = _same_halving(kernel)
    widths = [in_dim, *reversed(hidden), c2 * FEATURE_SIDE**2]
    fully_connected: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        fully_connected += [nn.Linear(n_in, n_out), *([nn.BatchNorm1d(n_out)] if batch_norm else []), act()]
    bn2d = [nn.BatchNorm2d(c1)] if batch_norm else []
    return nn.Sequential(
        *fully_connected,
        nn.Unflatten(1, (c2, FEATURE_SIDE, FEATURE_SIDE)),  # (B, c2, 7, 7)
        nn.ConvTranspose2d(c2, c1, kernel, stride=2, padding=pad, output_padding=out_pad),  # (B, c1, 14, 14)
        *bn2d,
        act(),
        nn.ConvTranspose2d(c1, 1, kernel, stride=2, padding=pad, output_padding=out_pad),  # (B, 1, 28, 28)
    )


@dataclass
class AutoencoderConfig(ModelConfig):
    """The network fields that AE, VAE, CVAE and AAE share (read by `encoder_decoder`)."""

    hidden_dims: tuple[int, ...] = (512, 256)  # encoder widths; the decoder mirrors them (arch "conv": the last only)
    arch: Literal["mlp", "conv"] = "mlp"  # "mlp" (fully connected) or "conv" (two stride-2 convolutions each way)
    channels: tuple[int, ...] = (16, 32)  # conv channels after the first and second convolution (arch "conv")
    kernel: int = AE_KERNEL  # conv kernel size (arch "conv"; 3, 4 or 5)
    activation: Activation | None = None  # "relu" or "silu" between layers (default: the model's, by arch)

    def validate(self) -> None:
        super().validate()
        check_widths("hidden_dims", self.hidden_dims)
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise GenlabError(f"channels must be two positive counts (first and second convolution), got {tuple(self.channels)}")
        if self.kernel not in (3, 4, 5):
            raise GenlabError(f"kernel must be 3, 4 or 5 (conv kernel size), got {self.kernel}")


def encoder_decoder(config: AutoencoderConfig, code_dim: int, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """The encoder (image -> code_dim) and decoder (latent_dim -> logits) of an autoencoder.

    arch "mlp": fully connected with `hidden_dims` (decoder mirrored); "conv": `conv_encoder` /
    `conv_decoder` with `channels`, `kernel` and one fully connected layer of the last (narrowest) width
    of `hidden_dims` between the conv features and the code (a direct linear map from a small
    code to the feature maps learns slowly; two layers cost more than they bring).
    AE, VAE, CVAE and AAE share this, so `--arch` means the same thing in each. `activation` is
    resolved by then (`GenerativeModel.__init__`).
    """
    activation = config.activation
    if config.arch == "conv":
        hidden, channels = tuple(config.hidden_dims)[-1:], tuple(config.channels)
        return (
            conv_encoder(code_dim, channels, hidden=hidden, kernel=config.kernel, activation=activation),
            conv_decoder(latent_dim, channels, hidden=hidden, kernel=config.kernel, activation=activation),
        )
    hidden, act = list(config.hidden_dims), ACTIVATIONS[activation]
    encoder = nn.Sequential(Flatten(), mlp([IMAGE_PIXELS, *hidden, code_dim], act))
    decoder = nn.Sequential(mlp([latent_dim, *reversed(hidden), IMAGE_PIXELS], act), Unflatten())
    return encoder, decoder


def label_input(z: torch.Tensor, labels: torch.Tensor | None, default_digit: int) -> torch.Tensor:
    """(B, D) noise/code and (B,) digits -> (B, D + 10): the input of a conditional decoder.
    No labels: every row draws `default_digit` (the figures' `plot_digit`)."""
    if labels is None:
        labels = torch.full((z.shape[0],), default_digit, dtype=torch.long, device=z.device)
    return torch.cat([z, F.one_hot(labels, NUM_CLASSES).to(z.dtype)], dim=1)


# --------------------------------------------------------------------------------------------
# A small U-Net for a velocity field v(x, t) (the flow model): residual blocks with group norm
# and SiLU, a sinusoidal time embedding added in every block, no attention at 28×28
# (the DDPM U-Net of Ho et al. 2020 without its attention layers, sized for a CPU).
# --------------------------------------------------------------------------------------------


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Times t (B,) in [0, 1] -> (B, dim) sines and cosines at geometric frequencies
    (Vaswani et al. 2017), of t·scale so that t's small steps still turn the fast ones."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * scale * freqs[None, :]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


UNET_EMBEDDING = 64  # width of the time (and class) embedding: plenty for one number and ten classes


def _groups(channels: int) -> int:
    """Group norm's groups: 8 where they divide the channels (Wu & He 2018 use 32 on wider nets)."""
    return math.gcd(8, channels)


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x))) + emb))) with a 1×1 skip when the width changes.
    (No zero-initialised last conv as in DDPM: every weight gets a gradient from the first step.)"""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]  # (B, C, 1, 1): the time (and class) for every pixel
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """(x (B, 1, 28, 28), t (B,), optional class c (B,)) -> (B, 1, 28, 28).

    `channels[i]` is the width at resolution i (28, 14, 7 for three entries), with
    `blocks` residual blocks per resolution on the way down and on the way up (each up block
    reads the skip of its level); `num_classes` > 0 adds a learned class embedding to the time
    embedding (index num_classes - 1 can serve as a "no class" token for guidance)."""

    def __init__(self, channels: tuple[int, ...], blocks: int = 1, num_classes: int = 0):
        super().__init__()
        c0, emb_dim = channels[0], UNET_EMBEDDING
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(1, c0, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        c = c0
        for level, width in enumerate(channels):
            for _ in range(blocks):
                self.down.append(ResBlock(c, width, emb_dim))
                c = width
                skips.append(c)
            if level < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # 28 -> 14 -> 7
        self.mid = ResBlock(c, c, emb_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, width in reversed(list(enumerate(channels))):
            for _ in range(blocks):
                self.up.append(ResBlock(c + skips.pop(), width, emb_dim))
                c = width
            if level > 0:  # the conv before the upsampling: at the low resolution, a quarter of the cost
                self.upsample.append(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.Upsample(scale_factor=2, mode="nearest")))
        self.norm_out, self.conv_out = nn.GroupNorm(_groups(c), c), nn.Conv2d(c, 1, 3, padding=1)
        self.levels, self.blocks = len(channels), blocks

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t, UNET_EMBEDDING))  # (B, E)
        if self.class_emb is not None:
            emb = emb + self.class_emb(c)
        h = self.conv_in(x)
        skips, blocks = [], iter(self.down)
        for level in range(self.levels):
            for _ in range(self.blocks):
                h = next(blocks)(h, emb)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
        h = self.mid(h, emb)
        blocks = iter(self.up)
        for i, level in enumerate(reversed(range(self.levels))):
            for _ in range(self.blocks):
                h = next(blocks)(torch.cat([h, skips.pop()], dim=1), emb)
            if level > 0:
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))

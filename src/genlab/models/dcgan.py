"""Deep convolutional GAN (Radford, Metz & Chintala 2016, https://arxiv.org/abs/1511.06434),
sized for 28×28 digits on a small CPU.

The same game as `gan.py` (non-saturating generator loss, a detached fake batch for the
discriminator step), with DCGAN's architecture and stabilisers:
  - generator: z -> linear -> (2c, 7, 7) -> transposed convolutions -> (1, 28, 28), batch norm
    and ReLU after every hidden layer (`blocks.conv_decoder(batch_norm=True)`);
  - discriminator: strided convolutions with leaky ReLU(0.2);
  - Adam with β1 = 0.5;
  - optional one-sided label smoothing: real target 1 − s (Salimans et al. 2016,
    https://arxiv.org/abs/1606.03498), which keeps D from becoming over-confident.
The convolutions share weights across positions, so D and G learn strokes rather than whole
784-pixel templates.

Changed from the paper for 5,000 training digits and a 2-core CPU, each measured (FID of
10k samples, notes/issue5_results.md): D has no batch norm by default (with it, D told real
from fake at once, D(G(z)) ≈ 0.02, and G learnt nothing recognisable), dropout 0.3 after its
activations and DiffAugment's random translation of everything it sees, so it cannot memorise
the small training set; G is wider than D; batch 32 and learning rate 5e-4, for more steps
per CPU second.

`cgan.py` and `wgan_gp.py` reuse this class's generator, discriminator and sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, check_fraction
from ..data import NUM_CLASSES
from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import FEATURE_SIDE, conv_decoder, conv_features, one_hot


@dataclass
class DCGANConfig(ModelConfig):
    latent_dim: int = 64  # noise size; GANs want more than 2 dimensions
    channels: tuple[int, ...] = (16, 32)  # D's conv channels (28->14->7); small: a 2-core CPU budget
    g_channels: tuple[int, ...] = (32, 64)  # G's channels, mirrored (7->14->28): G wider than D
    d_norm: str = "none"  # D's norm after the second conv: "none", "batch" (the paper's; D wins outright on 5k digits) or "layer"
    d_dropout: float = 0.3  # dropout after each of D's activations (keeps D from memorising a small data set)
    label_smoothing: float = 0.0  # one-sided: real target = 1 − this (Salimans et al. 2016); 0.1 also works
    translate: int = 2  # DiffAugment: shift every image D sees by up to this many pixels (0: off)

    def validate(self) -> None:
        super().validate()
        for name in ("channels", "g_channels"):
            if len(getattr(self, name)) != 2 or min(getattr(self, name)) < 1:
                raise GenlabError(f"{name} must be two positive counts, got {tuple(getattr(self, name))}")
        check_fraction("d_dropout", self.d_dropout, 1)
        if self.d_norm not in ("batch", "layer", "none"):
            raise GenlabError(f"d_norm must be 'batch', 'layer' or 'none', got '{self.d_norm}'")
        check_fraction("label_smoothing", self.label_smoothing, 0.5)
        if not 0 <= self.translate < 14:
            raise GenlabError(f"translate must be 0 to 13 pixels, got {self.translate}")


@register("dcgan")
class DCGAN(GenerativeModel):
    config_class = DCGANConfig
    family = "adversarial"
    phases = ("discriminator", "generator")
    default_lr = 5e-4  # measured better than the paper's 2e-4 at this budget (FID 155 vs 184 after 2,400 steps)
    default_epochs = 20  # the lab budget on 2 CPU cores: 3,140 steps of 32 images
    default_batch_size = 32  # steps matter more than batch size in the game: twice the steps per CPU second
    adam_betas = (0.5, 0.999)  # β1 = 0.5 (Radford et al. 2016): less momentum, fewer oscillations

    def __init__(self, config: DCGANConfig):
        super().__init__(config)
        channels = tuple(config.channels)
        n_labels = NUM_CLASSES if self.conditional else 0  # CGAN: a one-hot digit is appended to z
        # (B, z) -> logits (B, 1, 28, 28)
        self.generator = conv_decoder(config.latent_dim + n_labels, tuple(config.g_channels), batch_norm=True)
        norm = None if config.d_norm == "none" else config.d_norm
        # WGAN-GP's config has neither dropout nor translation: both would change the critic
        # whose input gradient the penalty constrains; hence the getattr defaults here.
        self.max_shift = getattr(config, "translate", 0)  # pixels (DiffAugment)
        self.features = conv_features(channels, norm=norm, dropout=getattr(config, "d_dropout", 0.0))  # (B, 1, 28, 28) -> (B, F)
        self.head = nn.Linear(channels[1] * FEATURE_SIDE**2, 1)  # (B, F) -> (B, 1) logit

    # --- the two players ------------------------------------------------------------------
    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        generator = {id(p) for p in self.generator.parameters()}
        if phase == "generator":
            return list(self.generator.parameters())
        return [p for p in self.parameters() if id(p) not in generator]  # D: everything else

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) -> images (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.generator(z))

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """What D looks at: real and fake images alike shifted by up to `translate` pixels
        (DiffAugment, Zhao et al. 2020, https://arxiv.org/abs/2006.10738). Differentiable, so G
        learns through it; it keeps D from memorising the 5,000 training digits."""
        return translate(images, self.max_shift) if self.max_shift else images

    def critic(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's logits (B,) for images in [0, 1] (rescaled to [−1, 1], the range DCGAN uses)."""
        return self.head(self.features(images * 2 - 1)).squeeze(1)

    def sample(self, n, generator=None, labels=None) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        return self.generate(z, labels)

    # --- the game -------------------------------------------------------------------------
    def loss(self, x, y, phase, cache) -> LossOutput:
        if "z" not in cache:  # one noise batch per training batch, shared by both phases
            cache["z"] = torch.randn(x.shape[0], self.config.latent_dim, device=x.device)
        labels = y if self.conditional else None  # CGAN: fakes of the same digits as the real batch
        if phase == "discriminator":
            with torch.no_grad():
                fake = self.generate(cache["z"], labels)
            logs = self._discriminator_terms(self.critic(self.augment(x), labels), self.critic(self.augment(fake), labels))
            return LossOutput(loss=logs["d_loss"], logs=logs)
        fake_logits = self.critic(self.augment(self.generate(cache["z"], labels)), labels)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))  # −log D(G(z))
        return LossOutput(loss=g_loss, logs={"g_loss": g_loss})

    def _discriminator_terms(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """D's loss, BCE(real -> 1 − smoothing) + BCE(fake -> 0), and the mean D(x), D(G(z))."""
        real_target = torch.full_like(real_logits, 1.0 - self.config.label_smoothing)
        d_loss = F.binary_cross_entropy_with_logits(real_logits, real_target) + F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits)
        )
        return {"d_loss": d_loss, "d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean()}

    @torch.no_grad()
    def eval_losses(self, x, y) -> dict[str, torch.Tensor]:
        """The training figures on a test batch in one pass: one fake batch, judged once, gives
        both players' losses (the base class would make and judge it once per phase)."""
        labels = y if self.conditional else None
        fake = self.generate(torch.randn(x.shape[0], self.config.latent_dim, device=x.device), labels)
        fake_logits = self.critic(fake, labels)
        logs = self._discriminator_terms(self.critic(x, labels), fake_logits)
        logs["g_loss"] = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        return logs


def translate(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image (B, C, H, W) by its own random (dy, dx) in [−max_shift, max_shift],
    filling with 0 (background); a gather, so gradients flow to the images."""
    b, c, h, w = images.shape
    shift = torch.randint(-max_shift, max_shift + 1, (2, b, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1) - shift[0]  # (B, H, 1): source row
    cols = torch.arange(w, device=images.device).view(1, 1, w) - shift[1]  # (B, 1, W): source column
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)  # (B, 1, H, W)
    source = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    return images.flatten(2).gather(2, source).view(b, c, h, w) * inside


def default_labels(n: int, device: torch.device) -> torch.Tensor:
    """Labels for a conditional model asked to sample without any: 0, 1, …, 9, 0, 1, … so the
    digits are equally frequent (what the metrics' class histogram expects)."""
    return torch.arange(n, device=device) % NUM_CLASSES


def check_labels(labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """Labels a user passed to `sample`/`decode` (or the balanced default when None), checked
    once here rather than in the training step: (n,) long on `device`."""
    if labels is None:
        return default_labels(n, device)
    labels = torch.as_tensor(labels, device=device).long().reshape(-1)
    if labels.shape[0] != n:
        raise GenlabError(f"expected {n} labels, one per image, got {labels.shape[0]}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise GenlabError(f"labels must be digits 0 to {NUM_CLASSES - 1}")
    return labels


def label_input(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, D) noise/code and (B,) digits -> (B, D + 10): the input of a conditional decoder."""
    return torch.cat([z, one_hot(labels, NUM_CLASSES).to(z.dtype)], dim=1)

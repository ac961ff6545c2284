"""Self-conditioned GAN (Liu et al. 2020, https://arxiv.org/abs/2006.16098; Lucic et al. 2019,
https://arxiv.org/abs/1903.02271): an unconditional GAN, trained without labels, that plays the
conditional game on clusters of the training digits.

On 5,000 digits the unconditional DCGAN mixes digit shapes (benchmarks/README.md, "GANs"),
while the same networks conditioned on the class reach a 5× lower FID (cgan). Here k-means
clusters of the training images (pixels; no labels) stand in for the class:
  - `prepare_training` clusters the training digits once (seeded, so a resumed run gets the
    same clusters) and keeps the centres and the clusters' frequencies as buffers, saved with
    the weights;
  - a real image's cluster is its nearest centre; D is the CGAN's projection discriminator
    over clusters, D(x, c) = w·φ(x) + e_c·φ(x) + b;
  - G(z) reads the cluster from z itself: c = the cluster whose share of the cumulative
    frequencies holds Φ(z[0]). So z ~ N(0, I) alone draws each cluster as often as the data
    has it: noise in, digit out, as for any unconditional GAN. In training, z[0] of the fake
    batch is drawn inside the real batch's clusters, so both batches have the same clusters
    (as CGAN gives its fakes the real batch's digits).
Everything else (networks, losses, DiffAugment, optimizers) is DCGAN's (`dcgan.py`); its
samples come from the loop's moving average of the weights (`ema` in `defaults`, genlab.ema).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenlabError
from . import register
from .blocks import FEATURE_SIDE, IMAGE_PIXELS
from .dcgan import DCGAN, DCGANConfig

KMEANS_ITERATIONS = 30  # Lloyd steps; the assignments of 5k digits settle well before
KMEANS_SEED = 0  # fixed: a resumed run must find the clusters it started with
# The centres are found on the first this many training digits (the shares count them all): k-means
# costs 30 passes over its points, 16× longer for the full 60,000 than for the offline 4,500, and a
# lab budgeted in steps should not take longer on more data (README, "The lab's budget").
KMEANS_DIGITS = 10000


@dataclass
class SCGANConfig(DCGANConfig):
    clusters: int = 50  # k-means clusters of the training digits G and D are conditioned on (benchmarks/README.md, "GANs")

    def validate(self) -> None:
        super().validate()
        if not 2 <= self.clusters <= 1000:
            raise GenlabError(f"clusters must be 2 to 1000, got {self.clusters}")


def kmeans(points: torch.Tensor, k: int, iterations: int = KMEANS_ITERATIONS, seed: int = KMEANS_SEED) -> torch.Tensor:
    """Lloyd's k-means of points (N, D) from a k-means++ start (Arthur & Vassilvitskii 2007:
    each next centre drawn with probability ∝ squared distance to the nearest one so far, with
    `seed`): the centres (k, D). An emptied cluster keeps its previous centre."""
    if len(points) < k:
        raise GenlabError(f"{k} clusters need at least {k} training images, got {len(points)}")
    gen = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(points), (1,), generator=gen))]
    sq_dist = (points - points[chosen[0]]).pow(2).sum(1)  # (N,)
    for _ in range(k - 1):
        chosen.append(int(torch.multinomial(sq_dist.cpu() + 1e-12, 1, generator=gen)))
        sq_dist = torch.minimum(sq_dist, (points - points[chosen[-1]]).pow(2).sum(1))
    centres = points[chosen].clone()
    for _ in range(iterations):
        assign = nearest(points, centres)  # (N,)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)  # (k,)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)  # (k, D)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    return centres


def nearest(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest centre (N,), squared Euclidean distance."""
    return (centres.pow(2).sum(1)[None, :] - 2 * points @ centres.T).argmin(1)


@register("scgan")
class SCGAN(DCGAN):
    config_class = SCGANConfig

    @classmethod
    def defaults(cls, config: SCGANConfig) -> dict:
        # Sample with the weights' moving average: a little cleaner than G itself (benchmarks/README.md, "GANs").
        return {**super().defaults(config), "ema": 0.99}

    def __init__(self, config: SCGANConfig):
        super().__init__(config)  # G reads `clusters` one-hot entries beside z (one_hot_inputs)
        k = self.config.clusters
        self.embed = nn.Embedding(k, self.config.channels[1] * FEATURE_SIDE**2)  # e_c: (k, F)
        nn.init.normal_(self.embed.weight, std=0.01)  # start as the unconditional D
        self.register_buffer("centres", torch.zeros(k, IMAGE_PIXELS))  # (k, 784), set by prepare_training
        self.register_buffer("cum_share", torch.arange(1, k + 1, dtype=torch.float32) / k)  # (k,) cumulative frequencies

    def one_hot_inputs(self) -> int:
        return self.config.clusters

    def prepare_training(self, x_train: torch.Tensor) -> None:
        points = x_train.flatten(1).float()
        centres = kmeans(points[:KMEANS_DIGITS].cpu(), self.config.clusters).to(points.device)
        counts = torch.bincount(nearest(points, centres), minlength=self.config.clusters).float()
        self.centres.copy_(centres)
        self.cum_share.copy_(counts.cumsum(0) / counts.sum())

    def cluster_of_noise(self, z: torch.Tensor) -> torch.Tensor:
        """The cluster G draws for noise z (B, D): where Φ(z[0]) falls in the cumulative shares (B,)."""
        u = torch.special.ndtr(z[:, 0]).contiguous()
        return torch.searchsorted(self.cum_share, u, right=True).clamp(max=self.config.clusters - 1)

    def noise_in_clusters(self, clusters: torch.Tensor) -> torch.Tensor:
        """z ~ N(0, I) (B, D) conditioned on G drawing `clusters` (B,): z[0] from the
        clusters' slices of the normal distribution."""
        z = torch.randn(len(clusters), self.config.latent_dim, device=clusters.device)
        low = torch.cat([self.cum_share.new_zeros(1), self.cum_share[:-1]])[clusters]
        u = low + (self.cum_share[clusters] - low) * torch.rand(len(clusters), device=clusters.device)
        z[:, 0] = torch.special.ndtri(u.clamp(1e-6, 1 - 1e-6))
        return z

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The generator: noise (B, latent_dim) -> images (B, 1, 28, 28); z[0] picks the cluster."""
        one_hot = F.one_hot(self.cluster_of_noise(z), self.config.clusters).to(z.dtype)
        return torch.sigmoid(self.generator(torch.cat([z, one_hot], dim=1)))

    def critic(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Projection discriminator logits (B,) over clusters: w·φ(x) + b + e_c·φ(x); `labels`
        are cluster indices here (the images' own nearest centres when None)."""
        if labels is None:
            labels = nearest(images.flatten(1), self.centres)
        phi = self.features(images * 2 - 1)  # (B, F)
        return self.head(phi).squeeze(1) + (self.embed(labels) * phi).sum(1)

    def loss(self, x, y, phase, cache):
        # The digit labels y are never read: the real batch's clusters replace them.
        if "clusters" not in cache:
            cache["clusters"] = nearest(x.flatten(1), self.centres)
            cache["z"] = self.noise_in_clusters(cache["clusters"])
        return self._game_loss(x, cache["clusters"], phase, cache)

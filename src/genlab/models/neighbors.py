"""Neighbour embedding: an optional loss that keeps digits which are near in pixel space near in
the code space (the AE's and VAE's `neighbor_weight`).

Why: the plain 2-D AE and VAE place test digits among training digits of their own class far
less often than a t-SNE map of the same digits does (benchmarks/README.md, "2-D codes"): the
pixel-space neighbourhoods are there, reconstruction alone does not keep them in 2-D. This
term asks the encoder to keep them, as parametric t-SNE does (van der Maaten 2009,
https://proceedings.mlr.press/v5/maaten09a.html) and parametric UMAP does beside an autoencoder
loss (Sainburg et al. 2021, https://arxiv.org/abs/2009.12981). It uses no labels.

How: once per run, the `NEIGHBORS` nearest training digits of every training digit (Euclidean
distance in pixels). Each training step draws `PAIRS` random training digits and one neighbour of
each, encodes both, and scores how well every digit picks out its own neighbour among all the
drawn neighbours, by the Cauchy similarity 1 / (1 + |s·(z − z')|²) of t-SNE (s = `CODE_SCALE`) —
a cross-entropy over the pairs, the contrastive form of neighbour embedding (Damrich et al. 2023,
https://arxiv.org/abs/2206.01816). Anchors are drawn with the global RNG, which the checkpoint
saves, so a resumed run draws the same pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GenlabError

# Neighbours per training digit (UMAP's default) and digit pairs per training step, drawn
# independently of the reconstruction batch: chosen on the validation split,
# benchmarks/README.md, "2-D codes".
NEIGHBORS = 15
PAIRS = 64
# Codes are multiplied by this before the Cauchy kernel. t-SNE maps of a few thousand points span
# tens of units; the VAE's KL keeps its codes near unit scale, where the kernel cannot tell near
# from far. The AE's encoder absorbs the factor (its codes come out 10× smaller).
CODE_SCALE = 10.0
# Distances are computed for this many digits at a time: (chunk, n) floats of memory.
GRAPH_CHUNK = 1024
# The graph links the first this many training digits (the anchors and their neighbours): exact
# k-NN costs n² distances, 2 s for the offline 4,500 digits but minutes for the full 60,000 on one
# core, and a lab budgeted in steps should not take longer on more data (README, "The lab's budget").
GRAPH_DIGITS = 10000


@torch.no_grad()
def neighbor_graph(x: torch.Tensor, k: int = NEIGHBORS) -> torch.Tensor:
    """(n, ...) images -> (n, k) indices of each image's k nearest other images (Euclidean)."""
    n = len(x)
    if n <= k:
        raise GenlabError(f"neighbor_weight needs more than {k} training images (its graph links each to {k} others), got {n}")
    flat = x.flatten(1).float()
    squared_norms = (flat * flat).sum(1)
    indices = []
    for start in range(0, n, GRAPH_CHUNK):
        rows = flat[start : start + GRAPH_CHUNK]
        distances = squared_norms[start : start + GRAPH_CHUNK, None] - 2 * rows @ flat.T + squared_norms[None]
        own = torch.arange(len(rows), device=x.device)
        distances[own, start + own] = float("inf")  # a digit is not its own neighbour
        indices.append(distances.topk(k, largest=False).indices)
    return torch.cat(indices)


def contrastive_neighbor_loss(codes: torch.Tensor, neighbor_codes: torch.Tensor, scale: float = CODE_SCALE) -> torch.Tensor:
    """Mean cross-entropy of picking row i's own neighbour (column i) among all the neighbour
    codes, with logits log(Cauchy similarity). (P, D), (P, D) -> scalar."""
    squared_distances = torch.cdist(codes.float() * scale, neighbor_codes.float() * scale).pow(2)  # float32 under autocast
    targets = torch.arange(len(codes), device=codes.device)
    return F.cross_entropy(-torch.log1p(squared_distances), targets)


class NeighborEmbedding:
    """The training digits and their neighbour graph; `loss(encode)` draws a batch of pairs.
    The digits are the grey ones also in `--binarize` runs: the term is about where codes go,
    not about the likelihood."""

    def __init__(self, x_train: torch.Tensor, k: int = NEIGHBORS, pairs: int = PAIRS):
        self.x_train = x_train[:GRAPH_DIGITS]
        self.graph = neighbor_graph(self.x_train, k)
        self.pairs = min(pairs, len(self.x_train))

    def loss(self, encode) -> torch.Tensor:
        n, k = self.graph.shape
        device = self.graph.device
        anchors = torch.randint(n, (self.pairs,), device=device)
        neighbors = self.graph[anchors, torch.randint(k, (self.pairs,), device=device)]
        return contrastive_neighbor_loss(encode(self.x_train[anchors]), encode(self.x_train[neighbors]))


class NeighborTerm:
    """The AE's and VAE's optional term, `weight` × the contrastive neighbour loss: built on the
    training digits before training (`prepare`), added to the training loss only (`add_to`). The
    logged "loss" stays the model's own objective, comparable with the test split's; the term is
    logged as "neighbor"."""

    def __init__(self, weight: float):
        self.weight = weight
        self.embedding: NeighborEmbedding | None = None  # None: off, or a loaded run (no graph)

    def prepare(self, x_train: torch.Tensor) -> None:
        if self.weight > 0:
            self.embedding = NeighborEmbedding(x_train)

    def add_to(self, loss: torch.Tensor, logs: dict, encode, training: bool) -> torch.Tensor:
        if self.embedding is None or not training:
            return loss
        neighbor = self.embedding.loss(encode)
        logs["neighbor"] = neighbor
        return loss + self.weight * neighbor

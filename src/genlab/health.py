"""Once-per-epoch health checks: cheap signs that a run is going wrong, as plain-words warnings.

The training loop calls `epoch_health` after each epoch's evaluation; what it returns goes into
that epoch's metrics row (`health` figures, `warnings` strings), the log and report.html. It
knows no model by name:
  - any model that can sample gets a *sample diversity* figure: the mean pairwise Euclidean
    distance between a fixed batch of its samples (fixed noise, so epochs are comparable). A
    generator that collapses onto a few shapes (GAN mode collapse, Goodfellow 2016,
    https://arxiv.org/abs/1701.00160 §5.1.1) makes it fall; a warning is given when it drops
    below `DIVERSITY_DROP` of its best earlier value;
  - a model may add its own checks with a method `health_warnings(train_logs) -> list[str]`,
    reading the epoch's mean training logs (the GAN warns when its discriminator wins
    every step).
Nothing here touches the global RNG, so the checks never change what a seeded run trains.
"""

from __future__ import annotations

import torch

from .models import GenerativeModel
from .utils import make_generator

DIVERSITY_SAMPLES = 64  # samples in the fixed batch: 64·63/2 pairs, a few ms per epoch
DIVERSITY_DROP = 0.5  # warn when diversity falls below this fraction of its best earlier value
DIVERSITY_SEED_OFFSET = 7919  # the batch's noise: seed + this, apart from the figures' seeds


@torch.no_grad()
def sample_diversity(model: GenerativeModel, seed: int, n: int = DIVERSITY_SAMPLES) -> float | None:
    """Mean pairwise L2 distance between n samples drawn with fixed noise; None if the model
    cannot sample. Identical samples give 0; distinct MNIST digits are about 9 to 10 apart."""
    if not model.can_sample:
        return None
    gen = make_generator(seed + DIVERSITY_SEED_OFFSET, model.device)
    labels = torch.arange(n, device=model.device) % 10 if model.conditional else None
    was_training = model.training
    model.eval()
    try:
        x = model.sample(n, generator=gen, labels=labels, sampler=model.health_sampler()).flatten(1).float()  # (n, 784)
    finally:
        model.train(was_training)
    distances = torch.cdist(x, x)  # (n, n), zero diagonal
    return float(distances.sum() / (n * (n - 1)))


def epoch_health(
    model: GenerativeModel, train_logs: dict[str, float], earlier_rows: list[dict], seed: int
) -> tuple[dict[str, float], list[str]]:
    """(figures for the metrics row's `health`, warnings) for the epoch that just ended.

    `earlier_rows` are the metrics rows of the previous epochs: their `health` figures are the
    history the new value is compared with, so the check survives a resume.
    """
    health: dict[str, float] = {}
    warnings: list[str] = []
    diversity = sample_diversity(model, seed)
    if diversity is not None:
        health["sample_diversity"] = round(diversity, 6)
        earlier = [r.get("health", {}).get("sample_diversity") for r in earlier_rows]
        earlier = [v for v in earlier if isinstance(v, (int, float))]
        if earlier and diversity < DIVERSITY_DROP * max(earlier):
            warnings.append(
                f"sample diversity fell to {diversity:.3g} from {max(earlier):.3g} earlier: the samples look more and more "
                "alike (mode collapse?); look at the samples figure, try a lower --lr or fewer epochs"
            )
    warnings.extend(model.health_warnings(train_logs))
    return health, warnings

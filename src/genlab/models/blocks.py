"""Building blocks shared by the model files."""

from __future__ import annotations

from torch import nn

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

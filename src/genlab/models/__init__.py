"""The model registry: name -> class, filled by the `@register` decorator in each model file.

Adding a model is one new file here with a `@register("name")` class, plus its import below.
The CLI, the training loop and checkpoint loading all look models up in `MODELS`.
"""

from __future__ import annotations

from ..errors import GenlabError
from .base import GenerativeModel, LossOutput, NotSupported

MODELS: dict[str, type[GenerativeModel]] = {}


def register(name: str):
    def decorator(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if name in MODELS:
            raise ValueError(f"model name '{name}' registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return decorator


def get_model_class(name: str) -> type[GenerativeModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise GenlabError(f"unknown model '{name}': choose one of {', '.join(sorted(MODELS))}") from None


# Importing the files fills the registry.
from . import aae, ae, cgan, cvae, dcgan, flow, gan, scgan, vae, wgan_gp  # noqa: E402,F401

__all__ = ["MODELS", "GenerativeModel", "LossOutput", "NotSupported", "get_model_class", "register"]

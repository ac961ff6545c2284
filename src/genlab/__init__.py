"""genlab: autoencoders, VAEs and GANs on MNIST-format data — train, visualise, measure.

    import genlab
    run_dir = genlab.fit(genlab.TrainConfig(model="vae", epochs=5), run_dir="runs/vae")
    run = genlab.load_run(run_dir)
    images = run.sample(16)            # (16, 1, 28, 28) in [0, 1]
    z = run.encode(images)             # AE / VAE only
"""

__version__ = "0.1.0"

from .config import ModelConfig, TrainConfig  # noqa: E402
from .data import DataBundle, load_dataset, read_idx  # noqa: E402
from .errors import GenlabError  # noqa: E402
from .models import MODELS, get_model_class  # noqa: E402
from .models.sampling import SamplerOptions  # noqa: E402
from .runs import Run, load_run  # noqa: E402
from .train import fit  # noqa: E402

__all__ = [
    "MODELS",
    "DataBundle",
    "GenlabError",
    "ModelConfig",
    "Run",
    "SamplerOptions",
    "TrainConfig",
    "fit",
    "get_model_class",
    "load_dataset",
    "load_run",
    "read_idx",
]

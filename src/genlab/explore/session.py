"""What the explorer page asks of a trained run, as plain functions of JSON-ready values.

An `Explorer` holds a loaded run, the test digits' codes, the training digits (for the nearest
neighbour) and the shipped classifier. The page works in a *view* of the latent space:

    z = origin + coords @ axes          axes (K, D) orthonormal, coords (K,)

The first two coordinates are the map under the pointer, the others the sliders. For a model
with an encoder the axes are the codes' principal directions (the codes' own axes when D = 2),
through the codes' mean; for a GAN they are z's first coordinates, through 0, and a seed sets
the rest of z. Everything a request brings is checked here (`RequestError`: a 4xx reply).
"""

from __future__ import annotations

import base64
import threading

import numpy as np
import torch

from ..classifier import load_classifier
from ..data import DataBundle, load_dataset
from ..errors import GenlabError
from ..models.sampling import SamplerOptions, kept_steps
from ..plots import slerp
from ..runs import Run
from ..utils import make_generator

N_POINTS = 2000  # test digits drawn on the map: enough to see the clusters, a small /api/info
N_SLIDERS = 6  # directions beyond the map's two offered as sliders (PCA order, or z's coordinates)
N_REFERENCE = 500  # test digits whose nearest training digit sets the page's "typical distance"
MAX_CODES = 64  # codes per decode request; the page asks for at most 10 (a strip, or every digit)
Z_LIMIT = 50.0  # |z_i| allowed: far beyond where any code or prior draw lies, so finite decodes
MAX_SEED = 2**31 - 1
PRIOR_RANGE = 3.0  # a GAN's map and sliders span ±3 (z ~ N(0, I): 99.7% of each coordinate)
# An iterative model (a flow) has no map: a seed sets the noise x₀ and the page integrates it.
MAX_STEPS = 32  # solver steps a request may ask: 64 network passes of one image with Heun, ~0.1-0.3 s on a CPU core
MAX_GUIDANCE = 8.0  # classifier-free guidance offered by the slider (1 = plain conditional, 0 = unconditional)
TRAJECTORY_KEEP = 8  # states along t in the strip, noise first, the picture last
STRIP = 10  # images in an interpolation between two seeds' noises
CLASSIFIED_DATASETS = ("mnist",)  # the shipped classifier reads digits, not clothes or kana


class RequestError(Exception):
    """A request the explorer refuses: `status` (4xx) and a one-line message for the page."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def image_b64(image: torch.Tensor) -> str:
    """(1, 28, 28) or (28, 28) in [0, 1] -> base64 of 784 grey bytes, row by row (the page's format)."""
    pixels = (image.reshape(28 * 28).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return base64.b64encode(pixels.tobytes()).decode("ascii")


def evenly_spaced(n_total: int, n: int) -> np.ndarray:
    """n indices spread over range(n_total): a split sorted by class still shows every class."""
    return np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(int))


def pca_view(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(origin (D,), axes (min(k, D), D)) for codes (N, D): the mean and principal directions;
    the codes' own axes through 0 when D <= 2, so the map reads as z itself."""
    d = codes.shape[1]
    if d <= 2:
        return np.zeros(d), np.eye(d)
    mean = codes.mean(0)
    _, _, vt = np.linalg.svd(codes - mean, full_matrices=False)
    return mean, vt[:k]


def map_ranges(coords: np.ndarray) -> list[list[float]]:
    """[low, high] per view coordinate, from coords (N, K): the central 99% widened by a fifth,
    so the pointer can leave the codes' cloud a little and see what lies there."""
    low, high = np.percentile(coords, 0.5, axis=0), np.percentile(coords, 99.5, axis=0)
    pad = 0.2 * np.maximum(high - low, 1e-3)
    return [[float(a), float(b)] for a, b in zip(low - pad, high + pad)]


class Explorer:
    """A run made ready for the page: `info()`, `decode(body)`, `seed(body)`."""

    def __init__(self, run: Run, data: DataBundle | None = None, n_points: int = N_POINTS):
        self.run = run
        self.model = run.model  # its flags (can_encode, conditional, ...) say what the page offers
        self.latent_dim = run.model_config.latent_dim
        if self.latent_dim < 2:
            raise GenlabError(f"{run.path}: a {self.latent_dim}-D latent space has no plane to explore; explore needs 2 or more dimensions")
        if data is None:
            data = load_dataset(run.train_config.dataset, run.train_config.data_dir)
        self.class_names = list(data.class_names)
        x_test, y_test = data.tensors("test")
        x_train, y_train = data.tensors("train")
        # Training digits as (784, N) and their squared norms: one matmul per request gives every
        # distance, |a - b|² = |a|² - 2 a·b + |b|².
        self._train = x_train.flatten(1)
        self._train_t = self._train.T.contiguous()
        self._train_sq = self._train.pow(2).sum(1)
        self._train_labels = y_train
        self.classifier = load_classifier() if run.train_config.dataset in CLASSIFIED_DATASETS else None
        # One model call at a time: torch modules are not promised to be thread-safe, and the
        # page keeps at most one decode in flight anyway.
        self.lock = threading.Lock()

        d = self.latent_dim
        keep = evenly_spaced(len(x_test), n_points)
        self.points: np.ndarray | None = None
        self.point_labels = y_test[keep].numpy()
        if self.model.iterative:  # a 784-D noise image has no plane worth a map: seeds and steps instead
            self.origin, self.axes, self.ranges = np.zeros(d), np.zeros((0, d)), []
        elif self.model.can_encode:
            codes = run.encode(x_test[keep]).numpy().astype(np.float64)
            self.origin, self.axes = pca_view(codes, 2 + N_SLIDERS)
            coords = (codes - self.origin) @ self.axes.T  # (N, K)
            self.points = coords[:, :2]
            self.ranges = map_ranges(coords)
        else:
            k = min(d, 2 + N_SLIDERS)
            self.origin, self.axes = np.zeros(d), np.eye(d)[:k]
            self.ranges = [[-PRIOR_RANGE, PRIOR_RANGE]] * k
        # How far real test digits lie from their nearest training digit, per class (thin 1s lie
        # nearer than 8s): the page compares a decoding's distance with its class's figure.
        chosen = evenly_spaced(len(x_test), N_REFERENCE)
        reference, reference_labels = self._nearest(x_test[chosen])[1].numpy(), y_test[chosen].numpy()
        self.typical_distance = float(np.median(reference))
        self.typical_by_class = [
            round(float(np.median(reference[reference_labels == c])), 3) if (reference_labels == c).any() else None
            for c in range(len(self.class_names))
        ]

    # --- what the page reads once ---------------------------------------------------------
    def info(self) -> dict:
        m = self.model
        return {
            "model": self.run.name,
            "family": m.family,
            "latent_dim": self.latent_dim,
            "can_encode": m.can_encode,
            "can_sample": m.can_sample,
            "conditional": m.conditional,
            "class_names": self.class_names,
            "origin": self.origin.round(5).tolist(),
            "axes": self.axes.round(5).tolist(),
            "axis_names": self.axis_names(),
            "ranges": [[round(a, 4), round(b, 4)] for a, b in self.ranges],
            "points": None if self.points is None else self.points.round(4).tolist(),
            "labels": self.point_labels.tolist() if self.points is not None else None,
            "classifier": self.classifier is not None,
            "typical_distance": round(self.typical_distance, 3),
            "typical_distance_by_class": self.typical_by_class,
            "n_train": len(self._train),
            "limits": {"max_codes": MAX_CODES, "z": Z_LIMIT, "max_seed": MAX_SEED},
            "iterative": m.iterative,
            "sampler": self.sampler_info() if m.iterative else None,
        }

    def sampler_info(self) -> dict:
        """What the step slider and the guidance slider of an iterative model offer."""
        default_nfe = self.model.nfe(SamplerOptions())
        per_step = self.model.nfe(SamplerOptions(steps=1))  # 1 (Euler) or 2 (Heun, midpoint)
        return {
            "max_steps": MAX_STEPS,
            "default_steps": max(1, min(MAX_STEPS, default_nfe // per_step)),
            "nfe_per_step": per_step,
            "keep": TRAJECTORY_KEEP,
            "strip": STRIP,
            "guidance": {"min": 0.0, "max": MAX_GUIDANCE, "default": 1.0} if self.model.conditional else None,
        }

    def axis_names(self) -> list[str]:
        k = len(self.axes)
        if self.model.can_encode and self.latent_dim > 2:
            return [f"PC {i + 1}" for i in range(k)]
        return [f"z[{i}]" for i in range(k)]

    # --- what the page asks on every pointer move ----------------------------------------
    def decode(self, body: dict) -> dict:
        """{"z": [[D numbers], ...], "digits": [..] (conditional models)} -> one image and one
        reading per code: {"images": [base64], "readings": [{digit, confidence, nearest}]}."""
        z = self.check_codes(body.get("z"))
        labels = self.check_digits(body.get("digits"), len(z))
        with self.lock:
            images = self.run.decode(z, labels=labels)  # for a GAN: its generator G(z)
            readings = self.readings(images)
        return {"images": [image_b64(im) for im in images], "readings": readings}

    def seed(self, body: dict) -> dict:
        """{"seed": s} -> {"z": the prior draw of that seed}: the same z for the same seed."""
        seed = check_seed(body.get("seed"))
        if not self.model.can_sample:
            raise RequestError(f"model '{self.run.name}' has no prior to draw a seed's z from")
        return {"seed": seed, "z": self.noise(seed).round(decimals=5).tolist()}

    # --- an iterative model: a seed's noise integrated, step by step ----------------------
    def flow(self, body: dict) -> dict:
        """{"seed", "steps" (1..MAX_STEPS), "digits": [d] and optional "guidance" (conditional)} -> the
        picture after that many solver steps from the seed's noise (exactly `genlab sample RUN
        --seed S --steps N -n 1`), its reading, and the states along t: {"image", "reading",
        "frames": [base64], "times": [t], "steps", "nfe"}."""
        self.require_iterative()
        seed, steps = check_seed(body.get("seed")), self.check_steps(body.get("steps"))
        labels = self.check_digits(body.get("digits"), 1)
        guidance = self.check_guidance(body.get("guidance"))
        with self.lock:
            frames, times = self.trajectory(seed, steps, labels, guidance)
            reading = self.readings(frames[-1:])[0]
        return {
            "image": image_b64(frames[-1]), "reading": reading, "frames": [image_b64(f) for f in frames], "times": times,
            "steps": steps, "nfe": self.model.nfe(SamplerOptions(steps=steps, guidance=guidance)),
        }

    def trajectory(self, seed: int, steps: int, labels: torch.Tensor | None, guidance: float | None) -> tuple[torch.Tensor, list[float]]:
        """The states along t (k, 1, 28, 28) of seed's noise solved in `steps` steps, noise first and
        the sample last (k = TRAJECTORY_KEEP, or steps + 1 if fewer), and their times t."""
        frames = self.run.trajectory(1, seed=seed, labels=labels, steps=steps, guidance=guidance, keep=min(TRAJECTORY_KEEP, steps + 1))[:, 0]
        times = self.model.solve_times(SamplerOptions(steps=steps, guidance=guidance))
        return frames, [round(times[i], 4) for i in kept_steps(steps, len(frames))]

    def interpolate(self, body: dict) -> dict:
        """{"seeds": [a, b], "digits": STRIP digits (conditional)} -> STRIP images from seed a's noise to seed
        b's along the sphere (spherical interpolation: N(0, I) noise lies near a sphere, the straight
        line between two draws passes inside it), each decoded (a flow: integrated with its default
        sampler) with its reading: {"images", "readings"}."""
        seeds = body.get("seeds")
        if not isinstance(seeds, list) or len(seeds) != 2:
            raise RequestError('"seeds" must be a list of two seeds')
        a, b = (check_seed(s) for s in seeds)
        if not self.model.can_sample:
            raise RequestError(f"model '{self.run.name}' has no prior to draw a seed's noise from")
        labels = self.check_digits(body.get("digits"), STRIP)
        t = torch.linspace(0, 1, STRIP).unsqueeze(1)
        z = slerp(self.noise(a), self.noise(b), t)
        with self.lock:
            images = self.run.decode(z, labels=labels)
            readings = self.readings(images)
        return {"images": [image_b64(im) for im in images], "readings": readings}

    def noise(self, seed: int) -> torch.Tensor:
        """The prior draw of `seed` (latent_dim,): a GAN's z, a flow's x₀, as `run.sample(1, seed)` draws it."""
        return torch.randn(self.latent_dim, generator=make_generator(seed))

    def require_iterative(self) -> None:
        if not self.model.iterative:
            raise RequestError(f"model '{self.run.name}' draws in one step: it has no steps to integrate")

    def check_steps(self, steps) -> int:
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
            raise RequestError(f"steps must be a whole number from 1 to {MAX_STEPS}")
        return steps

    def check_guidance(self, guidance) -> float | None:
        if guidance is None:
            return None
        if not self.model.conditional:
            raise RequestError(f"model '{self.run.name}' is not conditional: it takes no guidance")
        if not isinstance(guidance, (int, float)) or isinstance(guidance, bool) or not 0 <= guidance <= MAX_GUIDANCE:
            raise RequestError(f"guidance must be a number from 0 to {MAX_GUIDANCE:g}")
        return float(guidance)

    # --- readings beside every decoded digit ---------------------------------------------
    def readings(self, images: torch.Tensor) -> list[dict]:
        """What the classifier reads in each image, and the nearest training digit in pixels."""
        digit, confidence, index, distance = self.measure(images)
        return [
            {
                "digit": None if digit is None else int(digit[i]),
                "confidence": None if confidence is None else round(float(confidence[i]), 4),
                "nearest": {
                    "index": int(index[i]),
                    "label": self.training_label(int(index[i])),
                    "distance": round(float(distance[i]), 4),
                    "image": image_b64(self.training_image(int(index[i]))),
                },
            }
            for i in range(len(images))
        ]

    @torch.inference_mode()
    def measure(self, images: torch.Tensor):
        """For images (B, 1, 28, 28): (classifier's digit (B,), its probability (B,)) — both None
        without a classifier for the dataset — and (index (B,), pixel distance (B,)) of each
        image's nearest training digit."""
        index, distance = self._nearest(images)
        if self.classifier is None:
            return None, None, index, distance
        probs = torch.softmax(self.classifier(images.contiguous(memory_format=torch.channels_last)), 1)
        confidence, digit = probs.max(1)
        return digit, confidence, index, distance

    def training_image(self, index: int) -> torch.Tensor:
        return self._train[index].reshape(1, 28, 28)

    def training_label(self, index: int) -> int:
        return int(self._train_labels[index])

    @torch.inference_mode()
    def _nearest(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index (B,), Euclidean pixel distance (B,)) of each image's nearest training digit."""
        flat = images.reshape(len(images), -1).float()
        sq = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self._train_t + self._train_sq).clamp_min(0)
        best, index = sq.min(1)
        return index, best.sqrt()

    # --- checking what a request brings --------------------------------------------------
    def check_codes(self, rows) -> torch.Tensor:
        d = self.latent_dim
        if not isinstance(rows, list) or not rows:
            raise RequestError('"z" must be a non-empty list of codes, each a list of numbers')
        if len(rows) > MAX_CODES:
            raise RequestError(f"at most {MAX_CODES} codes per request, got {len(rows)}")
        for row in rows:
            if not isinstance(row, list) or len(row) != d:
                raise RequestError(f"each code must be a list of {d} numbers (the latent size of '{self.run.name}')")
            for value in row:
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise RequestError("codes hold numbers only")
                if not abs(value) <= Z_LIMIT:  # also false for NaN
                    raise RequestError(f"code values must be finite and within ±{Z_LIMIT:g}")
        return torch.tensor(rows, dtype=torch.float32)

    def check_digits(self, digits, n: int) -> torch.Tensor | None:
        if not self.model.conditional:
            if digits is not None:
                raise RequestError(f"model '{self.run.name}' is not conditional: it takes no digits")
            return None
        if digits is None:
            raise RequestError(f'model \'{self.run.name}\' is conditional: give "digits", one 0-9 per code')
        if not isinstance(digits, list) or len(digits) != n:
            raise RequestError(f'"digits" must be a list of {n} digits, one per code')
        for digit in digits:
            if not isinstance(digit, int) or isinstance(digit, bool) or not 0 <= digit <= 9:
                raise RequestError("each digit must be a whole number from 0 to 9")
        return torch.tensor(digits, dtype=torch.long)


def check_seed(seed) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be a whole number from 0 to {MAX_SEED}")
    return seed


def decode_threads() -> int:
    """Threads for the explorer's torch calls: one. A request is a few small matmuls, which
    more threads only slow down, the more so on a machine that is busy with other work."""
    return 1

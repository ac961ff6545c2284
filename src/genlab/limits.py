"""Bounds on what genlab reads from files it did not write, checked before anything is allocated.

Data folders and run folders may come from someone else: a header or a config can promise any
size. Each reader here looks at the promise first (the IDX header, the safetensors header, the
model a config.json describes, built on the `meta` device where it costs no memory) and refuses
an absurd or inconsistent one with one RunFolderError / DataError line, so memory stays bounded
by the size of the real data.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from .errors import GenlabError, RunFolderError, one_line

# An IDX file's payload, as its header promises it: EMNIST ByClass's training images are 547 MB,
# MNIST's 47 MB; a header promising more is refused before a byte of it is read or inflated.
MAX_IDX_BYTES = 2**30
# Parameters of one model: genlab's own are at most a few million, so this leaves wide room for
# wider variants while a config.json asking for a 40 GB network is refused before it is built.
MAX_PARAMETERS = 50_000_000
# config.json and eval.json are a few kB; metrics.jsonl grows by about 1 kB per epoch.
MAX_JSON_BYTES = 64 * 2**20
# The safetensors header (tensor names, shapes, genlab's metadata with the metrics rows so far).
MAX_SAFETENSORS_HEADER = 64 * 2**20
# A .png grid: 100 x 100 digits (2,800 pixels square) holds a whole MNIST test split.
MAX_GRID_IMAGES = 10_000
# `genlab eval`: samples scored (held in memory, with their features) and importance samples per
# image; 10x and 20x the papers' protocols (10,000 samples for FID, K = 5,000 for IWAE).
MAX_EVAL_SAMPLES = 100_000
MAX_IW_SAMPLES = 100_000
# Images generated per batch by `genlab sample` (and so per block written): bounded memory for any -n.
SAMPLE_BATCH = 1000


# --------------------------------------------------------------------------------------------
# JSON files
# --------------------------------------------------------------------------------------------


def read_json_text(path: Path, max_bytes: int = MAX_JSON_BYTES) -> str:
    """The text of a JSON file genlab reads, refused when larger than `max_bytes`."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RunFolderError(f"{path}: larger than the {max_bytes:,} bytes genlab reads from such a file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RunFolderError(f"{path}: not valid JSON (not UTF-8: {e.reason} at byte {e.start})") from None


def parse_json(text: str, where: str):
    """json.loads that turns every failure into one RunFolderError line: syntax, and nesting too
    deep for the parser (a `[[[[...` bomb raises RecursionError, not a JSONDecodeError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise RunFolderError(f"{where}: not valid JSON (nested too deeply)") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_kind(value, kind: str) -> bool:
    if kind == "number":
        return _is_number(value)
    if kind == "numbers":  # an object of numbers (NaN and inf allowed: a diverged run's figures)
        return isinstance(value, dict) and all(_is_number(v) for v in value.values())
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, {"string": str, "object": dict}[kind])


# What the fields genlab reads back from its own JSON files must be, where present.
RUN_INFO_FIELDS = {"parameters": "number", "device": "string", "versions": "object", "data": "object", "world_size": "number"}
DATA_INFO_FIELDS = {"name": "string", "source": "string", "sha256": "string", "notes": "strings", "n_train": "number", "n_test": "number"}
METRICS_ROW_FIELDS = {"train": "numbers", "test": "numbers", "health": "numbers", "warnings": "strings"}  # the rest: numbers
EVAL_FIELDS = {"metrics": "numbers", "notes": "strings", "warnings": "strings", "n_samples": "number", "iw_samples": "number", "n_test": "number", "fid_vs_nfe": "object"}


_KIND_WORDS = {"number": "a number", "numbers": "an object of numbers", "strings": "a list of strings", "string": "a string", "object": "an object"}


def check_fields(obj: dict, kinds: dict[str, str], where: str, others: str | None = None) -> None:
    """Refuse, naming the field, a value of the wrong kind in a JSON object genlab reads back
    (`others`: the kind every field not in `kinds` must have)."""
    for key, value in obj.items():
        kind = kinds.get(key, others)
        if kind is not None and not _is_kind(value, kind):
            raise RunFolderError(f"{where}: '{one_line(key)[:40]}' must be {_KIND_WORDS[kind]}")


def check_run_info(raw: dict, where: str) -> None:
    """The parts of config.json beside the configs that genlab reads back (data, versions, ...)."""
    check_fields(raw, RUN_INFO_FIELDS, where)
    check_fields(raw.get("data", {}), DATA_INFO_FIELDS, f"{where}: data")


def check_eval_sizes(n_samples: int, iw_samples: int) -> None:
    if n_samples > MAX_EVAL_SAMPLES:
        raise GenlabError(f"--n-samples {n_samples:,} is more than the {MAX_EVAL_SAMPLES:,} genlab eval scores")
    if iw_samples > MAX_IW_SAMPLES:
        raise GenlabError(f"--iw-samples {iw_samples:,} is more than the {MAX_IW_SAMPLES:,} genlab eval draws per image")


# --------------------------------------------------------------------------------------------
# safetensors headers
# --------------------------------------------------------------------------------------------


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, read without its tensors: {name: {dtype, shape,
    data_offsets}, "__metadata__": ...}. Refuses a header longer than MAX_SAFETENSORS_HEADER and
    a file whose size differs from what the header describes, so nothing reads past the data."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= min(MAX_SAFETENSORS_HEADER, size - 8):
            raise RunFolderError(f"{path}: not a readable safetensors file (header length {length} for a {size}-byte file)")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise RunFolderError(f"{path}: not a readable safetensors file (its header is not JSON)") from None
    end = 0
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else None
    try:
        for info in tensors.values():
            start, stop = (int(x) for x in info["data_offsets"])
            if not (0 <= start <= stop and all(isinstance(d, int) and d >= 0 for d in info["shape"])):
                raise ValueError
            end = max(end, stop)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise RunFolderError(f"{path}: not a readable safetensors file (malformed header)") from None
    if 8 + length + end != size:
        raise RunFolderError(f"{path}: not a readable safetensors file (its header describes {8 + length + end} bytes, the file has {size})")
    return header


# --------------------------------------------------------------------------------------------
# A model's size, from its config, before it is built
# --------------------------------------------------------------------------------------------


def meta_state_shapes(model_cls, model_config) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in the state dict of `model_cls(model_config)`, built on the
    meta device (no memory is allocated, whatever the widths); refuses more than MAX_PARAMETERS."""
    try:
        with torch.device("meta"):
            model = model_cls(model_config)
    except GenlabError:
        raise
    except Exception as e:  # noqa: BLE001 - any config the constructor cannot build is the config's fault
        raise RunFolderError(f"the model config does not build a '{model_cls.name}' model ({one_line(str(e).splitlines()[0] if str(e) else e)[:160]})") from None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    total = sum(math.prod(p.shape) for p in model.parameters())
    if total > MAX_PARAMETERS:
        largest = max(shapes.values(), key=math.prod)
        raise RunFolderError(
            f"{_fields_naming(model_config, largest) or 'the model config'} asks for a '{model_cls.name}' model of {total:,} parameters, "
            f"more than the {MAX_PARAMETERS:,} genlab builds"
        )
    return shapes


def check_config_fits_weights(model_cls, model_config, weights: Path, prefix: str = "", config_file: str = "config.json") -> None:
    """Refuse, naming the config field, a config whose model's tensors differ in shape from
    those the weights file holds (read from its header only): e.g. a config.json edited to ask
    for hidden widths of 100,000 beside weights of width 48."""
    expected = meta_state_shapes(model_cls, model_config)
    header = safetensors_header(weights)
    try:
        saved_model = json.loads(header["__metadata__"]["genlab"]).get("model")
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError):
        saved_model = None
    if saved_model != model_cls.name:
        return  # weights of another model: loading them says so
    found = {k[len(prefix) :]: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__" and k.startswith(prefix)}
    mismatches = [(key, shape, found[key]) for key, shape in expected.items() if key in found and found[key] != shape]
    if mismatches:  # the first tensor whose shape names a config field (a VAE's encoder head is 2·latent_dim wide)
        key, shape, saved = next((m for m in mismatches if _fields_naming(model_config, m[1], m[2])), mismatches[0])
        raise RunFolderError(
            f"{config_file}: {_fields_naming(model_config, shape, saved) or 'its model section'} does not fit {weights.name}: "
            f"tensor '{key}' would have shape {shape}, the file holds shape {saved}"
        )


def _fields_naming(model_config, shape: tuple[int, ...], other: tuple[int, ...] = ()) -> str:
    """'hidden_dims=(100000,)': the size fields of the config whose values appear in `shape`
    (and not in `other`, the shape the weights have), largest first."""
    dims = set(shape) - set(other)
    hits = []
    for name, value in vars(model_config).items():
        values = value if isinstance(value, tuple) else (value,)
        matches = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v in dims]
        if matches:
            hits.append((max(matches), f"{name}={value!r}"))
    return ", ".join(text for _, text in sorted(hits, reverse=True))

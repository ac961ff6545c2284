"""The model card of a run: RUN/README.md, the way a model is shared on the Hugging Face Hub.

YAML front matter (the Hub's model-card metadata: `library_name`, `tags`, `datasets`,
`pipeline_tag` and a `model-index` holding the measured metrics), then plain Markdown: what the
model is, how it was trained, its evaluation with each metric's caveats, its samples, how to
load it and its limitations. Written from the run folder alone (config.json, metrics.jsonl,
eval.json, eval-gmm.json, prior.safetensors, figures/), with no network: by `fit` when training
ends, then again by `genlab eval` (evaluate.write_eval), `genlab fit-prior` (prior.fit_run_prior)
and after the figures are drawn, so it always describes what the folder holds.

Every string that comes from the folder (its name, a config value, a note) is escaped for the
place it goes: YAML double-quoted scalars in the front matter, HTML and Markdown in the body, a
fence longer than any backtick run around code.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import shlex
from pathlib import Path

from .metrics import BY_NAME, direction
from .models import get_model_class
from .runs import CARD_FILE, FIGURES_DIR, PRIOR_EVAL_FILE, PRIOR_FILE, load_tensors, read_config, read_metrics
from .utils import atomic_write_text

# The Hub's ids of the datasets genlab reads (others keep genlab's name).
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
FAMILY_TAGS = {"reconstruction": "autoencoder", "adversarial": "gan", "flow": "flow-matching"}  # the family's common name as a Hub tag
CARD_FIGURES = (("samples", "Samples"), ("reconstructions", "Reconstructions (test digits above, their reconstructions below)"))
FULL_MNIST_TRAIN = 60000


def changed_settings(train_config, model_config) -> list[tuple[str, str, object, object]]:
    """(section "train" or "model", field, value, default) for each setting of a run that differs
    from what `genlab train MODEL` with no options would use, in the configs' field order. A
    default the model derives from other settings (`defaults`) is derived from this run's."""
    cls = get_model_class(train_config.model)
    changed = []
    model_defaults = cls.defaults(model_config)
    for f in dataclasses.fields(train_config):
        default = _field_default(f)
        if default is None:
            default = model_defaults.get(f.name)
        value = getattr(train_config, f.name)
        if f.name != "model" and value != default:
            changed.append(("train", f.name, value, default))
    for f in dataclasses.fields(model_config):
        default = _field_default(f)
        if default is None:
            default = cls.defaults(dataclasses.replace(model_config, **{f.name: None})).get(f.name)
        value = getattr(model_config, f.name)
        if value != default:
            changed.append(("model", f.name, value, default))
    return changed


def _field_default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING else f.default


def setting_text(value) -> str:
    """A config value as a user types it: `conv`, `0.002`, `64 128`, `off` for None."""
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------
# Escaping
# --------------------------------------------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#|~^])")
_LIST_MARKER = re.compile(r"^(\d*)([.)+\-])")  # "1." "3)" "-" "+" opening a text would start a list
# What a double-quoted YAML scalar may hold unescaped: YAML 1.1's printable set (what PyYAML's
# reader accepts) less the line breaks NEL, LS and PS, which a double-quoted scalar would fold.
_YAML_UNPRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def md(text) -> str:
    """Any text as Markdown that shows exactly it, on one line: HTML is escaped (no tag or
    entity survives), then the marks that make links, emphasis, code, headings, table cells
    or a list are backslash-escaped."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return _LIST_MARKER.sub(r"\1\\\2", _MARKDOWN_SPECIAL.sub(r"\\\1", text))


def code_block(text: str, language: str) -> str:
    """A fenced code block that no backtick run inside `text` can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def yaml_scalar(value) -> str:
    """A YAML scalar that reads back as exactly `value`: strings double-quoted (JSON escapes,
    and \\u escapes for what YAML does not allow raw), floats with a decimal point."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:  # YAML 1.1 wants 1.0e-05, not 1e-05
            text = text.replace("e", ".0e", 1)
        return text
    quoted = json.dumps(str(value), ensure_ascii=False)
    return _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}" if ord(m.group()) < 0x10000 else f"\\U{ord(m.group()):08x}", quoted)


def yaml_block(obj, indent: int = 0) -> list[str]:
    """Block-style YAML lines of nested dicts and lists of scalars (keys are plain words)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{key}:")
                lines.extend(yaml_block(value, indent + (0 if isinstance(value, list) else 2)))
            else:
                lines.append(f"{pad}{key}: {yaml_scalar(value) if not isinstance(value, (dict, list)) else '[]'}")
    else:
        for item in obj:
            if isinstance(item, dict):
                inner = yaml_block(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {yaml_scalar(item)}")
    return lines


# --------------------------------------------------------------------------------------------
# The card
# --------------------------------------------------------------------------------------------


def write_card(run_dir: str | Path) -> Path:
    """Write (or rewrite) RUN/README.md from what the run folder holds; returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / CARD_FILE
    atomic_write_text(path, card_text(run_dir))
    return path


def _evaluations(run_dir: Path) -> list[tuple[str, dict]]:
    """(file name, results) of the run's evaluations: eval.json, then eval-gmm.json."""
    from .evaluate import EVAL_FILE, read_eval

    found = []
    for name in (EVAL_FILE, PRIOR_EVAL_FILE):
        results = read_eval(run_dir, name)
        if results:
            found.append((name, results))
    return found


def _task(cls) -> str:
    return "unconditional-image-generation" if cls.can_sample else "image-feature-extraction"


def front_matter(run_dir: Path, train_config, info: dict, cls, evaluations: list[tuple[str, dict]]) -> dict:
    """The Hub metadata of the card, as a dict (written as YAML by `yaml_block`)."""
    data = info.get("data", {}) if isinstance(info.get("data"), dict) else {}
    dataset = HUB_DATASETS.get(train_config.dataset, train_config.dataset)
    tags = ["genlab", train_config.dataset, train_config.model, FAMILY_TAGS.get(cls.family, cls.family)]
    tags += ["vae"] * cls.has_likelihood + ["class-conditional"] * cls.conditional
    if cls.can_sample:
        tags.append("unconditional-image-generation")
    meta = {
        "library_name": "genlab",
        "pipeline_tag": _task(cls),
        "tags": list(dict.fromkeys(tags)),
        "datasets": [dataset],
    }
    results = []
    for name, evaluation in evaluations:
        metrics = {k: v for k, v in evaluation["metrics"].items() if isinstance(v, (int, float))}
        prior = evaluation.get("prior", "standard normal")
        results.append(
            {
                "task": {"type": _task(cls), "name": f"{train_config.dataset} ({name}, prior: {prior})"},
                "dataset": {"type": dataset, "name": train_config.dataset, "split": "test", "args": {"n_test": evaluation.get("n_test", data.get("n_test", 0))}},
                "metrics": [{"type": k, "name": k, "value": v} for k, v in metrics.items()],
            }
        )
    if results:
        meta["model-index"] = [{"name": run_dir.name, "results": results}]
    return meta


def card_text(run_dir: Path) -> str:
    """The whole card: front matter, then the body."""
    train_config, model_config, info = read_config(run_dir)
    cls = get_model_class(train_config.model)
    rows = read_metrics(run_dir)
    evaluations = _evaluations(run_dir)
    name = run_dir.resolve().name
    parts = ["---", *yaml_block(front_matter(run_dir.resolve(), train_config, info, cls, evaluations)), "---", ""]
    parts += [f"# {md(name)}", "", _summary(train_config, model_config, info, cls), ""]
    parts += _training(run_dir, train_config, model_config, info, rows)
    parts += _evaluation(run_dir, evaluations)
    parts += _figures(run_dir)
    parts += _usage(name, cls)
    parts += _limitations(train_config, model_config, info, cls)
    return "\n".join(parts).rstrip() + "\n"


def _summary(train_config, model_config, info: dict, cls) -> str:
    can = [what for flag, what in (
        ("can_sample", "draw new digits"), ("can_encode", "encode a digit to a code and reconstruct it"),
        ("has_likelihood", "bound the log-likelihood of a digit"), ("conditional", "draw the digit it is asked for"),
    ) if getattr(cls, flag)]
    parameters = info.get("parameters")
    size = f"{parameters:,} parameters" if isinstance(parameters, int) else "parameters unknown"
    return (
        f"A genlab `{train_config.model}` model ({cls.family} family; {size}; latent size {model_config.latent_dim}) "
        f"trained on {md(train_config.dataset)}. It can {', '.join(can) if can else 'decode codes to digits'}."
    )


def _table(head: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _training(run_dir: Path, train_config, model_config, info: dict, rows: list[dict]) -> list[str]:
    data = info.get("data", {}) if isinstance(info.get("data"), dict) else {}
    versions = info.get("versions", {}) if isinstance(info.get("versions"), dict) else {}
    seconds = sum(r.get("seconds", 0) for r in rows)
    facts = [
        ("data", f"{md(data.get('source', '?'))}: {data.get('n_train', '?')} training, {data.get('n_test', '?')} test digits"),
        ("data SHA-256", md(data.get("sha256", "?"))),
        ("epochs", f"{len(rows)} of {train_config.epochs} ({rows[-1]['step'] if rows else 0} steps of {train_config.batch_size} images)"),
        ("training time", f"{seconds:.1f} s" + (f" ({rows[-1]['images_per_s']:.0f} images/s in the last epoch)" if rows else "")),
        ("hardware", f"{md(info.get('device', '?'))}, {info.get('world_size', 1)} process(es)"),
        ("precision", md(train_config.precision)),
        ("software", md(", ".join(f"{k} {v}" for k, v in versions.items()))),
    ]
    components = prior_components(run_dir)
    if components is not None:
        facts.append(("prior", f"a Gaussian mixture of {components} components fitted to its codes (genlab fit-prior, {PRIOR_FILE}): sample with --prior gmm"))
    lines = ["## Training", "", *_table(("", ""), facts), ""]
    changed = changed_settings(train_config, model_config)
    if changed:
        lines += ["Settings that differ from `genlab train " + train_config.model + "`'s defaults (all of them: `config.json`):", ""]
        lines += _table(("setting", "value", "default"), [(f"`{name}`", md(setting_text(v)), md(setting_text(d))) for _, name, v, d in changed])
    else:
        lines.append("Trained with `genlab train " + train_config.model + "`'s defaults (all settings: `config.json`).")
    if rows:
        last = rows[-1]
        train = last.get("train", {})
        losses = [(md(k), f"{train[k]:.4g}" if k in train else "", f"{v:.4g}") for k, v in last.get("test", {}).items()]
        if losses:
            n_test, subset = data.get("n_test", 0), train_config.epoch_eval_images
            scored = f"the first {subset} of the {n_test}" if 0 < subset < n_test else "all"
            lines += ["", f"Losses of the last epoch (test: {scored} test digits):", ""]
            lines += _table(("loss", "train", "test"), losses)
    return lines + [""]


def _evaluation(run_dir: Path, evaluations: list[tuple[str, dict]]) -> list[str]:
    lines = ["## Evaluation", ""]
    if not evaluations:
        return lines + ["No metrics yet: this run has not been evaluated. Measure it with `genlab eval RUN_DIR` (this folder).", ""]
    for name, results in evaluations:
        prior = results.get("prior", "standard normal")
        lines += [
            f"From `{name}` (`genlab eval`{' --prior gmm' if name == PRIOR_EVAL_FILE else ''}): seed {results.get('seed', '?')}, "
            f"{results.get('n_test', '?')} test digits, {results.get('n_samples', 0)} samples, prior: {md(prior)}.",
            "",
        ]
        metrics = results["metrics"]
        rows = [
            (md(k), _number(v), md(direction(k) or ("a description, not a score" if k in BY_NAME else "")))
            for k, v in metrics.items() if not k.startswith("class_frac_")  # the ten shares: one row below
        ]
        shares = [(d, metrics[f"class_frac_{d}"]) for d in range(10) if isinstance(metrics.get(f"class_frac_{d}"), (int, float))]
        if shares:
            rows.append(("class\\_frac\\_0 … 9", ", ".join(f"{d}: {share:.1%}" for d, share in shares), "shares of the samples per digit"))
        lines += _table(("metric", "value", "direction"), rows) + [""]
    notes = dict.fromkeys(n for _, results in evaluations for n in results.get("notes", []))
    warnings = dict.fromkeys(w for _, results in evaluations for w in results.get("warnings", []))
    if notes:
        lines += ["What the metrics mean, and their caveats:", "", *(f"- {md(n)}" for n in notes), ""]
    if warnings:
        lines += ["Warnings of the evaluation:", "", *(f"- {md(w)}" for w in warnings), ""]
    return lines


def _number(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _figures(run_dir: Path) -> list[str]:
    lines = []
    for stem, title in CARD_FIGURES:
        if (run_dir / FIGURES_DIR / f"{stem}.png").is_file():
            lines += [f"### {title}", "", f"![{title}]({FIGURES_DIR}/{stem}.png)", ""]
    return (["## Figures", "", *lines] if lines else [])


def _usage(name: str, cls) -> list[str]:
    python = ["import genlab", "", f"run = genlab.load_run({json.dumps(name)})"]
    shell = []
    if cls.can_sample:
        python.append("images = run.sample(16, seed=0)     # (16, 1, 28, 28) in [0, 1]")
        shell.append(f"genlab sample {shlex.quote(name)} -n 64 -o samples.png")
    if cls.can_encode:
        python.append("codes = run.encode(images)         # (N, latent size)" if cls.can_sample else "codes = run.encode(x)  # x: (N, 1, 28, 28) in [0, 1]")
        shell.append(f"genlab encode {shlex.quote(name)} -o latents.npz")
    shell.append(f"genlab eval {shlex.quote(name)}")
    return [
        "## How to use", "", "With genlab installed, from the folder that holds this run:", "",
        code_block("\n".join(python), "python"), "", code_block("\n".join(shell), "bash"), "",
    ]


def _limitations(train_config, model_config, info: dict, cls) -> list[str]:
    data = info.get("data", {}) if isinstance(info.get("data"), dict) else {}
    items = [f"It knows only 28×28 grey images like those of {md(train_config.dataset)}; anything else is out of its distribution."]
    n_train = data.get("n_train")
    if isinstance(n_train, int) and n_train < FULL_MNIST_TRAIN:
        items.append(f"It learned from {n_train:,} training digits, not the full 60,000: expect less variety and more memorisation.")
    items.append("FID, precision and recall use genlab's own MNIST classifier features, not Inception: compare them only with other genlab runs.")
    if not cls.can_sample:
        items.append("It has no prior to sample from: it encodes and reconstructs, it does not generate new digits.")
    if not cls.can_encode:
        items.append("It has no encoder: it cannot map a digit to a code, and it gives no likelihood to score digits with.")
    elif not cls.has_likelihood:
        items.append("It gives no likelihood: it cannot tell how probable a digit is.")
    if model_config.latent_dim <= 2:
        items.append("A code of 2 numbers cannot hold a digit's detail: its images are blurred averages of similar digits.")
    items.append("A teaching model: not for any decision about people or documents.")
    return ["## Limitations", "", *(f"- {item}" for item in items), ""]


def prior_components(run_dir: Path) -> int | None:
    """Components of the run's fitted mixture prior (genlab fit-prior), or None without one."""
    path = Path(run_dir) / PRIOR_FILE
    if not path.is_file():
        return None
    components = load_tensors(path)[1].get("components")
    return components if isinstance(components, int) else None

"""report.html: one self-contained page (figures inlined as base64, no server, no internet)
comparing the lab's models — reconstruction-based (AE, VAE), adversarial (GAN) and flow (flow
matching) side by side."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

from .evaluate import fid_curve, read_eval
from .explore.offline import explorer_block
from .metrics import RANKED
from .lab import LAB_ENTRIES
from .modelcard import changed_settings, setting_text
from .models import get_model_class
from .plots import fid_vs_nfe_figure
from .runs import CARD_FILE, CONFIG_FILE, FIGURES_DIR, read_config, read_metrics
from .utils import atomic_write_text

FIGURE_TITLES = {
    "samples": "Samples",
    "reconstructions": "Reconstructions",
    "latent_space": "Latent space of the test set",
    "manifold": "Decoded latent manifold",
    "interpolation": "Interpolation",
    "trajectory": "Along t: the noise becoming a digit",
    "losses": "Training curves",
}

FAMILY_TEXT = {
    "reconstruction": (
        "Reconstruction-based models (AE, VAE) learn an encoder and a decoder by making the output match the input. "
        "They give a latent code for every digit, reconstructions and a likelihood bound (VAE), and train stably; "
        "but squared-error or Bernoulli losses average over plausible outputs, so their images are blurry, "
        "and an AE has no prior to sample from at all. "
        "A 2-D code can be drawn and explored but holds too little to draw a clean digit; a 16-D conv VAE sampled "
        "from a mixture fitted to its codes draws far better ones but cannot be drawn as a map: hence two VAEs."
    ),
    "adversarial": (
        "Adversarial models (GAN) learn only a generator, judged by a discriminator rather than by pixel error. "
        "Their samples are sharper, because blur is easy for the discriminator to spot; but they have no encoder, "
        "no likelihood, training is a two-player game whose losses oscillate instead of falling, "
        "and they can collapse onto a few digit shapes (check the class coverage below). "
        "On 5,000 training digits two things make the difference: the discriminator sees every image, real and fake "
        "alike, randomly shifted (DiffAugment), so it cannot memorise the training set, and the unconditional GAN "
        "plays the conditional game on clusters of the training digits (found without labels), which stops it from "
        "blending digit shapes; the same networks without either draw half-formed digits. Its samples come from a "
        "moving average of the generator's weights, which smooths out the last steps' oscillation."
    ),
    "flow": (
        "Flow models (flow matching, the simpler form of diffusion behind today's image generators) learn a velocity "
        "field: at every time t between 0 and 1 and every image, which way to move. Training draws noise x₀, a real "
        "digit x₁ and a time t, puts the image at x_t = (1 − t)·x₀ + t·x₁ on the straight line between them, and asks "
        "the network for the direction of that line, x₁ − x₀, with a squared error: no discriminator, no game, a loss "
        "that falls like an autoencoder's. To draw a digit, start from noise and follow the field step by step, solving "
        "an ordinary differential equation: more steps follow the curved paths of the learned field more closely and "
        "give better digits, each step one more pass of the network, so quality costs time (the figure of FID against "
        "network evaluations below measures how much). Because the path is a smooth, invertible map, the model also "
        "gives the exact likelihood of a digit, by the change of variables along the path."
    ),
}
# The order the families are compared in; a family not listed here comes after them.
FAMILY_ORDER = ("reconstruction", "adversarial", "flow")
FAMILY_TITLES = {"reconstruction": "reconstruction-based", "adversarial": "adversarial", "flow": "flow"}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f3f3f3}
.row{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start} .col{flex:1 1 340px;min-width:300px}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:1.5em;align-items:start}
figure{margin:.5em 0} figure img{width:100%;border:1px solid #eee} figcaption{font-size:.9em;color:#555}
table.settings{font-size:.88em} table.settings td:not(:first-child){font-family:ui-monospace,monospace}
.note{color:#555;font-size:.9em} .warn{color:#a40}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(run_dir: Path, name: str, model: str) -> str:
    path = run_dir / FIGURES_DIR / f"{name}.png"
    if not path.is_file():
        return ""
    title = FIGURE_TITLES.get(name, name)
    return f"<figure>{_img(path, f'{model} {title}')}<figcaption>{html.escape(model)}: {html.escape(title)}</figcaption></figure>"


def _figure_names(run_dir: Path) -> list[str]:
    """The run's figures: the known ones in FIGURE_TITLES' order, then any other PNG plots.py wrote."""
    present = {p.stem for p in (run_dir / FIGURES_DIR).glob("*.png")} if (run_dir / FIGURES_DIR).is_dir() else set()
    return [name for name in FIGURE_TITLES if name in present] + sorted(present - set(FIGURE_TITLES))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _load_runs(lab_dir: Path, models: list[str] | None) -> list[dict]:
    names = models or sorted(p.name for p in lab_dir.iterdir() if (p / CONFIG_FILE).is_file())
    runs = []
    for name in names:
        run_dir = lab_dir / name
        if not (run_dir / CONFIG_FILE).is_file():
            continue
        train_config, model_config, info = read_config(run_dir)
        cls = get_model_class(train_config.model)
        evaluation = read_eval(run_dir)
        runs.append(
            {
                "name": name,
                "dir": run_dir,
                "family": cls.family,
                "train": train_config,
                "model": model_config,
                "info": info,
                "metrics": read_metrics(run_dir),
                "eval": evaluation,
            }
        )
    return runs


def _summary_table(runs: list[dict]) -> str:
    head = "<tr><th>model</th><th>family</th><th>parameters</th><th>latent</th><th>epochs</th><th>train seconds</th><th>final test losses</th><th>card</th></tr>"
    rows = []
    for r in runs:
        last = r["metrics"][-1] if r["metrics"] else {}
        seconds = sum(m.get("seconds", 0) for m in r["metrics"])
        losses = ", ".join(f"{k} {_fmt(v)}" for k, v in last.get("test", {}).items())
        scored, n_test = r["train"].epoch_eval_images, r["info"].get("data", {}).get("n_test", 0)
        if losses and 0 < scored < n_test:  # the loss curves' subset, not the whole split
            losses += f" (first {scored} of {n_test} test digits)"
        rows.append(
            f"<tr><td>{html.escape(r['name'])}</td><td>{r['family']}</td><td>{_fmt(r['info'].get('parameters', ''))}</td>"
            f"<td>{r['model'].latent_dim}</td><td>{len(r['metrics'])}</td><td>{seconds:.1f}</td><td>{html.escape(losses)}</td><td>{_card_link(r)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _metric(run: dict, key: str):
    value = run["eval"].get("metrics", {}).get(key)
    return value if isinstance(value, (int, float)) else None


def _family_reading(members: list[dict]) -> str:
    """What this lab's numbers say about a family, in a sentence or two (empty if unmeasured)."""
    def best(key, lower_better):
        scored = [(r, _metric(r, key)) for r in members if _metric(r, key) is not None]
        return min(scored, key=lambda t: t[1] if lower_better else -t[1]) if scored else (None, None)

    sentences = []
    run, mse = best("recon_mse_per_pixel", True)  # each sentence where some member has the metric
    if run:
        sentences.append(f"Here {run['name']} reconstructs best ({mse:.4f} MSE per pixel)")
        knn_run, knn = best("knn5_accuracy", False)
        if knn_run:
            sentences[-1] += f" and {knn_run['name']}'s codes separate the digits best (5-NN accuracy {knn:.2f})"
        sentences[-1] += "."
    run, fid = best("fid", True)
    if run:
        entropy, precision, recall = _metric(run, "class_entropy"), _metric(run, "precision"), _metric(run, "recall")
        text = f"Its best sampler, {run['name']}, reaches FID {fid:.3g}"
        if precision is not None and recall is not None:
            text += f" with precision {precision:.2f} (samples that look real) and recall {recall:.2f} (real digits covered)"
        if entropy is not None:
            text += f"; class entropy {entropy:.2f}" + (" (all ten digits)" if entropy >= 0.95 else " (some digits are under-represented)")
        sentences.append(text + ".")
    for r in members:  # an iterative sampler: what its steps buy
        points = [p for p in (_curve(r) or {}).get("points", []) if p.get("fid") is not None]
        if len(points) > 1:
            sentences.append(
                f"{r['name']}'s FID goes from {points[0]['fid']:.3g} at {points[0]['nfe']} network evaluation"
                f"{'s' if points[0]['nfe'] > 1 else ''} per sample to {points[-1]['fid']:.3g} at {points[-1]['nfe']}."
            )
    run, bpd = best("bits_per_dim", True)
    if run:
        sentences.append(f"{run['name']} gives the test digits {bpd:.3g} bits per dimension (see the note on likelihoods below).")
    return " ".join(sentences)


def _curve(run: dict) -> dict | None:
    """The run's checked FID-vs-NFE section of eval.json, or None."""
    return fid_curve(run["eval"], str(run["dir"] / "eval.json"))


def _fid_vs_nfe_section(runs: list[dict]) -> str:
    """FID against network evaluations per sample: each iterative model's curve beside every
    one-step sampler's single point, all from the lab's eval.json files. Empty when no model
    has a curve (several points): one-step models alone have nothing to trade."""
    curves = [dict(curve, name=r["name"]) for r in runs if (curve := _curve(r))]
    if not any(len(c["points"]) > 1 for c in curves):
        return ""
    counts = sorted({int(c["samples"]) for c in curves})
    figure = base64.b64encode(fid_vs_nfe_figure(curves)).decode("ascii")
    columns = sorted({p["nfe"] for c in curves for p in c["points"]})
    head = "<tr><th>model</th><th>samples</th>" + "".join(f"<th>NFE {n}</th>" for n in columns) + "</tr>"
    rows = []
    for c in curves:
        by_nfe = {p["nfe"]: p["fid"] for p in c["points"]}
        cells = "".join(f"<td>{_fmt(by_nfe[n]) if by_nfe.get(n) is not None else ''}</td>" for n in columns)
        rows.append(f"<tr><td>{html.escape(c['name'])}</td><td>{int(c['samples']):,}</td>{cells}</tr>")
    note = (
        "A one-step sampler (GAN, VAE) makes a digit with one pass of its network; a flow makes it with as many passes "
        "as its ODE solver takes steps (Euler: one pass per step). The same noises are integrated with 1, 2, 4, … steps, "
        "so the curve shows what each doubling of the cost buys. FID here is computed from "
        + (f"{counts[0]:,} samples per point" if len(counts) == 1 else "the sample counts in the table")
        + " against the test set's features; FID grows as the sample count falls, so compare these points with each "
        "other, not with the fid row above (drawn from more samples)."
    )
    return (
        "<h3>Sample quality against sampling cost</h3>"
        f"<figure><img alt='FID against network evaluations per sample' src='data:image/png;base64,{figure}'>"
        f"<figcaption>FID against network evaluations per sample (NFE), "
        f"{html.escape(', '.join(f'{n:,}' for n in counts))} samples per point.</figcaption></figure>"
        f"<table>{head}{''.join(rows)}</table><p class='note'>{note}</p>"
    )


def _likelihood_note(runs: list[dict]) -> str:
    """Why a flow's bits/dim and a VAE's IWAE bound sit on different scales, with this lab's
    numbers; empty unless some model has bits/dim."""
    bpd = [(r["name"], _metric(r, "bits_per_dim")) for r in runs if _metric(r, "bits_per_dim") is not None]
    iwae = [(r["name"], _metric(r, "iwae_log_px_nats")) for r in runs if _metric(r, "iwae_log_px_nats") is not None]
    if not bpd:
        return ""
    measured = "; ".join(f"{html.escape(n)}: {v:.3g} bits/dim" for n, v in bpd)
    text = (
        f"<h3>Two likelihoods, two scales</h3><p>The flow's likelihood ({measured}) is an exact density, by the change of "
        "variables along its ODE, of the 8-bit grey test digits made continuous by uniform dequantisation (noise "
        "within each of the 256 grey levels), in bits per pixel (784 per digit; lower is better). "
    )
    if iwae:
        vae = "; ".join(f"{html.escape(n)}: {v:.4g} nats per digit" for n, v in iwae)
        text += (
            f"The VAEs' bound ({vae}) is a lower bound on a different quantity: a Bernoulli likelihood that treats each "
            "pixel's grey value as the probability of ink, a model of (soft) black-and-white pixels rather than a density "
            "over 256 grey levels. Dividing nats by 784·ln 2 puts it in bits per pixel but not on the same data: the two "
            "numbers measure different probabilities of different things, so neither ranks the other. "
        )
    return text + "For scale, FFJORD reports 0.99 bits/dim on MNIST trained on all 60,000 digits.</p>"


def _metrics_table(runs: list[dict]) -> str:
    """The evaluation metrics (eval.json) side by side, blank where a metric does not apply,
    then each model ranked on the metrics that several of them share."""
    keys: list[str] = []
    for r in runs:
        for k, v in r["eval"].get("metrics", {}).items():
            # the ten per-class shares are folded into one 'class histogram' row below
            if isinstance(v, (int, float)) and k not in keys and not k.startswith("class_frac_"):
                keys.append(k)
    if not keys:
        return ""
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(r['name'])}</th>" for r in runs) + "</tr>"
    body = []
    for k in keys:
        cells = "".join(f"<td>{_fmt(r['eval'].get('metrics', {}).get(k, ''))}</td>" for r in runs)
        body.append(f"<tr><td>{html.escape(k)}</td>{cells}</tr>")
    histograms = []
    for r in runs:
        shares = [_metric(r, f"class_frac_{d}") for d in range(10)]
        histograms.append(" ".join(f"{d}:{s:.0%}" for d, s in enumerate(shares) if s is not None))
    if any(histograms):
        body.append("<tr><td>class histogram of samples</td>" + "".join(f"<td style='font-size:.8em'>{h}</td>" for h in histograms) + "</tr>")
    ranking = []
    for metric in RANKED:  # metrics.py says which metrics rank models, and which way
        scored = [(r["name"], _metric(r, metric.name)) for r in runs if _metric(r, metric.name) is not None]
        if len(scored) >= 2:
            scored.sort(key=lambda item: item[1], reverse=metric.higher_is_better)
            ranking.append(f"<li>{html.escape(metric.label)}: " + " &gt; ".join(f"<b>{html.escape(n)}</b> ({v:.4g})" for n, v in scored) + "</li>")
    rank_html = f"<h3>Ranking, best first</h3><ul>{''.join(ranking)}</ul>" if ranking else ""
    notes = {n for r in runs for n in r["eval"].get("notes", [])}
    note_html = "".join(f"<li>{html.escape(str(n))}</li>" for n in sorted(notes))
    return f"<h2>Measured</h2><table>{head}{''.join(body)}</table>{rank_html}" + (f"<ul class='note'>{note_html}</ul>" if note_html else "")


def _card_link(run: dict) -> str:
    """A link to the run's model card (RUN/README.md), relative to report.html beside the runs."""
    if not (run["dir"] / CARD_FILE).is_file():
        return ""
    return f"<a href='{html.escape(_url_path(run['name']), quote=True)}/{CARD_FILE}'>model card</a>"


def _url_path(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _settings_table(run: dict) -> str:
    """The run's settings that differ from its model's defaults, as a small table."""
    changed = changed_settings(run["train"], run["model"])
    if not changed:
        return f"<p class='note'>Trained with the defaults of <code>genlab train {html.escape(run['train'].model)}</code>.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(setting_text(value))}</td><td>{html.escape(setting_text(default))}</td></tr>"
        for _, name, value, default in changed
    )
    model = html.escape(run["train"].model)
    return f"<table class='settings'><tr><th>setting ({model})</th><th>value</th><th>default</th></tr>{rows}</table>"


def _warnings(run: dict) -> str:
    warnings = [w for m in run["metrics"] for w in m.get("warnings", [])] + run["eval"].get("warnings", [])
    if not warnings:
        return ""
    return "<ul class='warn'>" + "".join(f"<li>{html.escape(str(w))}</li>" for w in dict.fromkeys(warnings)) + "</ul>"


def write_report(lab_dir: Path, models: list[str] | None = None) -> Path:
    """Write `lab_dir/report.html` from the run folders inside it; returns its path."""
    lab_dir = Path(lab_dir)
    runs = _load_runs(lab_dir, models)
    if not runs:
        from .errors import RunFolderError

        raise RunFolderError(f"{lab_dir} holds no run folders to report on")
    data = runs[0]["info"].get("data", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>genlab report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>genlab: autoencoders, VAEs, GANs and flows</h1>",
        f"<p class='note'>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Data: {html.escape(data.get('source', '?'))} "
        f"({_fmt(data.get('n_train', '?'))} training, {_fmt(data.get('n_test', '?'))} test images).</p>",
        "<h2>Summary</h2>",
        _summary_table(runs),
        _metrics_table(runs),
        _likelihood_note(runs),
    ]
    present = sorted({r["family"] for r in runs}, key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f))
    families = {f: [r for r in runs if r["family"] == f] for f in present}
    parts.append(f"<h2>{html.escape(' vs '.join(FAMILY_TITLES.get(f, f) for f in present).capitalize())}</h2>")
    parts.append("<div class='row'>")
    for family, members in families.items():
        parts.append(f"<div class='col'><h3>{html.escape(FAMILY_TITLES.get(family, family).capitalize())}: {html.escape(', '.join(r['name'] for r in members))}</h3>")
        parts.append(f"<p>{FAMILY_TEXT.get(family, '')}</p><p><i>{html.escape(_family_reading(members))}</i></p></div>")
    parts.append("</div>")
    # The pictures that both families can show, next to each other.
    for figure in ("samples", "trajectory", "interpolation", "losses"):
        cells = [(r, _figure(r["dir"], figure, r["name"])) for r in runs]
        cells = [(r, c) for r, c in cells if c]
        if len(cells) < (1 if figure == "trajectory" else 2):  # only iterative models have a trajectory: one is worth showing
            continue
        parts.append(f"<h3>{FIGURE_TITLES[figure]}{'' if figure == 'trajectory' else ', side by side'}</h3><div class='figures'>")
        parts.extend(f"<div>{c}</div>" for _, c in cells)
        parts.append("</div>")
        if figure == "samples":  # what the samples cost: an iterative sampler's steps against FID
            parts.append(_fid_vs_nfe_section(runs))
    for r in runs:
        parts.append(f"<h2 id='{html.escape(r['name'])}'>{html.escape(r['name'])} ({r['family']})</h2>")
        if r["name"] in LAB_ENTRIES and LAB_ENTRIES[r["name"]].why:
            parts.append(f"<p>{html.escape(LAB_ENTRIES[r['name']].why)}</p>")
        if r["eval"].get("prior", "standard normal") != "standard normal":
            parts.append(f"<p class='note'>Samples and scores drawn from the prior: {html.escape(r['eval']['prior'])}.</p>")
        card = _card_link(r)
        parts.append(_settings_table(r) + (f"<p>Its {card}: what it is, how it was trained, its metrics and how to load it.</p>" if card else ""))
        parts.append(_warnings(r))
        parts.append("<div class='figures'>")
        for figure in _figure_names(r["dir"]):
            cell = _figure(r["dir"], figure, r["name"])
            if cell:
                parts.append(f"<div>{cell}</div>")
        parts.append("</div>")
        parts.append(explorer_block(r["dir"]))  # a live latent map, for models with a 2-D code
    parts.append("</body></html>")
    path = lab_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path

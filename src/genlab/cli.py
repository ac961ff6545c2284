"""The `genlab` command: parse, call the library, print. All logic lives in importable modules.

Errors a user can fix (GenlabError, bad arguments, unwritable files) print one line on stderr
and exit with status 2; no traceback. A run stopped by Ctrl-C (SIGTERM) prints its one line and
exits with 130 (143), as shells expect.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import sys
import types
import typing
from pathlib import Path

import numpy as np

from .config import TrainConfig, choices
from .errors import GenlabError, one_line

EXIT_USAGE = 2
IMAGE_SUFFIXES = (".npy", ".png")  # what sample / reconstruct write: the array, or a grid to look at
DEFAULT_COMPONENTS = 50  # genlab.prior.DEFAULT_COMPONENTS, repeated so --help does not import torch
IW_TEST_DIGITS = 2000  # genlab.evaluate.IW_TEST_DIGITS, likewise
SOLVERS = ("euler", "heun", "midpoint")  # genlab.models.sampling.SOLVERS, likewise
DENSITY_DIGITS = 100  # genlab.evaluate.DENSITY_DIGITS, likewise
PRIOR_OPTION = dict(
    choices=("normal", "gmm"),
    default="normal",
    help="normal: the model's N(0, I); gmm: the Gaussian mixture of genlab fit-prior (VAE; default: normal)",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), not the whole usage text."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------------------------
# Options generated from the config dataclasses
# --------------------------------------------------------------------------------------------


def field_help(cls) -> dict[str, str]:
    """The `# comment` after each field in a config dataclass's source: its --help text."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for match in re.finditer(r"^\s+(\w+): [^=\n]+=[^#\n]*#\s*(.+)$", source, re.M):
            helps[match.group(1)] = match.group(2).strip()
    return helps


def add_dataclass_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One --option per field of `cls`, default None (= keep the config's own default)."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # None: the field's comment says what it means (the model's own default, GENLAB_DATA, ...)
        help_text = helps.get(f.name, "") + ("" if default is None else f" (default: {default})")
        if choices(hint):
            parser.add_argument(flag, choices=choices(hint), default=None, help=help_text)
        elif hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(hint) is tuple:
            item = next(a for a in typing.get_args(hint) if a is not Ellipsis)
            parser.add_argument(flag, type=item, nargs="+", default=None, metavar=f.name.upper(), help=help_text)
        else:
            parser.add_argument(flag, type=hint, default=None, metavar=f.name.split("_")[-1].upper(), help=help_text)


def dataclass_from_args(cls, args: argparse.Namespace, base=None):
    """`base` (or `cls()`) with every option the user gave on the command line applied."""
    config = base if base is not None else cls()
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(config, f.name, tuple(value) if isinstance(value, list) else value)
    config.validate()
    return config


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_train(args) -> None:
    from . import plots
    from .modelcard import write_card
    from .models import get_model_class
    from .runs import CONFIG_FILE, load_run, read_config
    from .distributed import env_rank
    from .train import fit

    model_cls = get_model_class(args.model)
    _use_threads(args.threads)
    train_config = dataclass_from_args(TrainConfig, args, TrainConfig(model=args.model))
    model_config = dataclass_from_args(model_cls.config_class, args)
    out = Path(args.out or f"runs/{args.model}")
    if args.resume and (out / CONFIG_FILE).is_file():
        saved = read_config(out)[0].model  # the saved config wins on resume: refuse a different model
        if saved != args.model:
            raise GenlabError(f"{out} holds a '{saved}' run, not '{args.model}': continue it with genlab resume {out}")
    # --device with --resume moves the run; the saved config's other settings win
    run_dir = fit(train_config, model_config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, device=args.device)
    if env_rank() > 0:  # under torchrun rank 0 alone draws and prints
        return
    if not args.no_figures:
        figures = plots.make_figures(load_run(run_dir, device=args.device or "auto"))
        print(f"figures: {', '.join(sorted(figures))} in {run_dir / 'figures'}")
        write_card(run_dir)  # now with the samples figure
    print(f"done: {run_dir}")


def cmd_resume(args) -> None:
    from . import plots
    from .distributed import env_rank
    from .modelcard import write_card
    from .runs import load_run, read_config
    from .train import fit

    read_config(Path(args.run_dir))  # a run folder with a valid config, or one clear error
    _use_threads(args.threads)
    budget = TrainConfig(epochs=args.epochs, steps=args.steps)
    budget.validate()  # not both
    run_dir = fit(budget, None, Path(args.run_dir), resume=True, progress=not args.quiet, device=args.device)
    if env_rank() > 0:
        return
    plots.make_figures(load_run(run_dir))
    write_card(run_dir)
    print(f"done: {run_dir}")


def _use_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process: `threads`, else OMP_NUM_THREADS where the
    environment sets it (torchrun does), else every core it may use (under torchrun, its share)."""
    import os

    import torch

    from .utils import usable_cores

    if threads is not None and threads < 1:
        raise GenlabError(f"threads must be at least 1, got {threads}")
    omp = os.environ.get("OMP_NUM_THREADS", "")
    default = int(omp) if omp.isdigit() and int(omp) > 0 else usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, threads or default))


def _open_run(args):
    from .runs import load_run

    return load_run(args.run_dir, device=getattr(args, "device", None) or "auto")


def _over_test_set(run, fn, batch: int = 1000):
    """`fn` applied to the run's test split in batches -> (numpy array, labels tensor)."""
    from .data import load_dataset

    x, y = load_dataset(run.train_config.dataset, run.train_config.data_dir).tensors("test")
    return np.concatenate([fn(x[i : i + batch]).numpy() for i in range(0, len(x), batch)]), y


def _require_unconditional_vae(run, what: str) -> None:
    if not run.model.has_likelihood or run.model.conditional:
        raise GenlabError(f"{what} needs a vae run (model '{run.name}' has no posterior q(z|x) under an unconditional prior)")


def _fitted_prior(run, choice: str):
    """None for the model's own N(0, I); the run's fitted mixture for --prior gmm."""
    if choice == "normal":
        return None
    from .prior import load_prior
    from .utils import weights_sha256

    _require_unconditional_vae(run, "--prior gmm")
    return load_prior(run.path, run.model.config.latent_dim, weights_sha256(run.model))


def _sampler_args(args) -> dict:
    """--steps / --solver / --guidance / --shift as Run.sample's keywords (None: the model's default)."""
    return {"steps": args.steps, "solver": args.solver, "guidance": getattr(args, "guidance", None), "shift": args.shift}


def _add_sampler_options(p, guidance: bool = True) -> None:
    """The ODE sampler of an iterative model (flow, cflow); one-step models ignore it."""
    p.add_argument("--steps", type=int, metavar="N", help="solver steps from noise to image, 1 to 1000 (flow models; default: the model's own)")
    p.add_argument("--solver", choices=SOLVERS, help="ODE solver: euler (1 network pass per step), heun or midpoint (2 per step) (default: the model's own)")
    p.add_argument(
        "--shift", type=float, metavar="S",
        help="time shift of the solver's steps: 1 = equal steps, above 1 = shorter steps near the noise (default: the model's own)",
    )
    if guidance:
        p.add_argument(
            "--guidance", type=float, metavar="W",
            help="classifier-free guidance of a conditional flow: v = v_uncond + W (v_cond - v_uncond); 1 = plain conditional, 0 = unconditional (default: the model's own)",
        )


def _output_file(path: str, suffixes: tuple[str, ...]) -> Path:
    """-o checked before any work: a known file type in a folder that exists."""
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise GenlabError(f"-o {path}: the file name must end in {' or '.join(suffixes)}")
    if not target.parent.is_dir():
        raise GenlabError(f"cannot write {target}: folder {target.parent} does not exist")
    return target


def cmd_sample(args) -> None:
    from .samples import check_image_output, sample_batches, write_image_blocks

    if args.n < 1:
        raise GenlabError(f"-n must be at least 1 image, got {args.n}")
    target = _output_file(args.output, IMAGE_SUFFIXES)
    check_image_output(target, args.n)
    run = _open_run(args)
    if not run.model.can_sample:
        raise GenlabError(f"model '{run.name}' cannot sample (no prior over its latent space); try a vae or gan run")
    if args.digit is not None:
        if not run.model.conditional:
            raise GenlabError(f"model '{run.name}' is not conditional: --digit needs a conditional model (cvae, cgan, cflow)")
        if not 0 <= args.digit <= 9:
            raise GenlabError(f"--digit must be 0 to 9, got {args.digit}")
    prior = _fitted_prior(run, args.prior)
    sampler = _sampler_args(args)
    run.sampler(**sampler)  # a bad option or --guidance without classes: one line before any work
    shape = write_image_blocks(target, args.n, sample_batches(run, args.n, args.seed, args.digit, prior, **sampler))
    print(f"wrote {args.n} samples {shape} to {target}")


def cmd_encode(args) -> None:
    from .utils import atomic_write_bytes

    target = _output_file(args.output, (".npz",))
    run = _open_run(args)
    if not run.model.can_encode:
        raise GenlabError(f"model '{run.name}' has no encoder; encode needs an ae or vae run")
    z, y = _over_test_set(run, run.encode)
    buffer = io.BytesIO()
    np.savez(buffer, z=z, y=y.numpy())
    atomic_write_bytes(target, buffer.getvalue())
    print(f"wrote latents z {z.shape} and labels y ({len(y)}) to {target}")


def cmd_reconstruct(args) -> None:
    from .samples import write_image_blocks

    target = _output_file(args.output, IMAGE_SUFFIXES)
    run = _open_run(args)
    if not run.model.can_encode:
        raise GenlabError(f"model '{run.name}' cannot reconstruct; reconstruct needs an ae or vae run")
    recon, _ = _over_test_set(run, run.reconstruct)
    recon = recon.squeeze(1).astype(np.float32)
    write_image_blocks(target, len(recon), [recon])
    print(f"wrote {len(recon)} reconstructions {recon.shape} to {target}")


def cmd_plot(args) -> None:
    from . import plots

    figures = plots.make_figures(_open_run(args), seed=args.seed)
    for name, path in sorted(figures.items()):
        print(f"{name}: {path}")


def cmd_lab(args) -> None:
    from .lab import run_lab

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    report = run_lab(
        Path(args.out),
        models=models,
        epochs=args.epochs,
        steps=args.steps,
        seed=args.seed,
        data_dir=args.data,
        device=args.device,
        precision=args.precision,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
        threads=args.threads,
        tensorboard=not args.no_tensorboard,
        sample_steps=args.sample_steps,
        solver=args.solver,
        sample_shift=args.sample_shift,
    )
    print(f"report: {report}")


def cmd_report(args) -> None:
    from .report import write_report

    print(f"report: {write_report(Path(args.lab_dir))}")


def cmd_explore(args) -> None:
    from .explore import serve

    serve(Path(args.run_dir), host=args.host, port=args.port, open_browser=not args.no_browser)


def cmd_eval(args) -> None:
    import json

    from .evaluate import evaluate_run, format_results, write_eval
    from .runs import EVAL_FILE, PRIOR_EVAL_FILE

    eval_file = PRIOR_EVAL_FILE if args.prior == "gmm" else EVAL_FILE  # eval.json stays N(0, I)'s: the report reads it
    run = _open_run(args)
    prior = _fitted_prior(run, args.prior)
    results = evaluate_run(
        run, seed=args.seed, n_samples=args.n_samples, iw_samples=args.iw_samples, prior=prior, iw_digits=args.iw_digits,
        density_digits=args.density_digits, **_sampler_args(args),
    )
    if not args.no_save:
        write_eval(run.path, results, eval_file)
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return
    print(format_results(results))
    print(f"conventions: the 'notes' in {run.path / eval_file} (or --json)" if not args.no_save else "conventions: the 'notes' of --json")


def cmd_fit_prior(args) -> None:
    from .data import load_dataset
    from .lock import RunFolderLock
    from .prior import fit_run_prior
    from .runs import require_training_data

    with RunFolderLock(args.run_dir):  # not while the run trains: the prior would fit weights about to change
        run = _open_run(args)
        _require_unconditional_vae(run, "fit-prior")
        data = load_dataset(run.train_config.dataset, run.train_config.data_dir)
        # the prior must describe the codes of the digits the model learned from
        require_training_data(run.path, run.info, data, "fit its prior with the same data (the GENLAB_DATA it trained with)")
        x_train, _ = data.tensors("train", run.device)
        _, path, n_codes = fit_run_prior(run, x_train, args.components, args.seed, data_sha256=data.sha256)
    print(f"fitted a {args.components}-component Gaussian mixture to {n_codes} codes of the {len(x_train)} training digits: {path}")
    print(f"use it: genlab sample {run.path} --prior gmm -o samples.png; genlab eval {run.path} --prior gmm")


def cmd_classifier_train(args) -> None:
    from .classifier import DEFAULT_OUT, ClassifierConfig, default_path, train_classifier
    from .data import load_dataset

    config = ClassifierConfig(seed=args.seed, **({"epochs": args.epochs} if args.epochs is not None else {}))
    command = f"genlab classifier train --seed {config.seed} --epochs {config.epochs}"
    if args.replace_shipped and args.out is not None:
        raise GenlabError("-o and --replace-shipped name two different files: give one of them")
    out = default_path() if args.replace_shipped else (args.out or DEFAULT_OUT)
    log = print if not args.quiet else (lambda s: None)
    train_classifier(config, data=load_dataset("mnist", args.data), out=out, log=log, command=command, replace_shipped=args.replace_shipped)


def cmd_classifier_test(args) -> None:
    from .classifier import accuracy, default_path, load_classifier, provenance
    from .data import load_dataset

    data = load_dataset("mnist", args.data)
    x, y = data.tensors("test")
    acc = accuracy(load_classifier(args.weights), x, y)
    recorded = provenance(args.weights).get("test_accuracy")
    print(f"test accuracy {acc:.4f} on {len(y)} digits ({data.source.split('; ')[-1]}); weights {args.weights or default_path()}")
    if recorded is not None:
        print(f"recorded when trained: {recorded:.4f}")


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


DEVICE_HELP = "auto, cpu, cuda, mps (default: auto)"
DATA_HELP = "folder with IDX files (default: $GENLAB_DATA, cache, download, offline digits)"
THREADS_HELP = "CPU threads for torch (default: $OMP_NUM_THREADS, else every core this process may use)"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="genlab", description="Train, show and measure AE, VAE, GAN and flow-matching models on MNIST-format data.")
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for add_command in (  # in the order `genlab --help` lists them
        _add_train_command, _add_resume_command, _add_sample_command, _add_fit_prior_command, _add_encode_command,
        _add_reconstruct_command, _add_plot_command, _add_lab_command, _add_explore_command, _add_report_command,
        _add_eval_command, _add_classifier_command,
    ):
        add_command(commands)
    return parser


def _add_train_command(commands) -> None:
    from .models import MODELS

    train = commands.add_parser("train", help="train one model into a run folder")
    models = train.add_subparsers(dest="model", required=True, parser_class=_Parser, metavar="MODEL")
    for name, cls in sorted(MODELS.items()):
        module_doc = inspect.getdoc(inspect.getmodule(cls)) or ""
        p = models.add_parser(name, help=module_doc.split(":")[0].split("(")[0].strip(), description=module_doc)
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        add_dataclass_options(p, TrainConfig, skip=("model", "data_dir"))
        p.add_argument("--data", dest="data_dir", metavar="DIR", help=DATA_HELP)
        add_dataclass_options(p, cls.config_class)
        p.add_argument("--out", metavar="RUN_DIR", help=f"run folder (default: runs/{name})")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--no-figures", action="store_true", help="skip writing figures at the end")
        p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
        p.set_defaults(func=cmd_train)


def _add_resume_command(commands) -> None:
    p = commands.add_parser("resume", help="continue a run folder from its last checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--epochs", type=int, help="train to this many epochs in all (default: as configured)")
    p.add_argument("--device", help="continue on this device: auto, cpu, cuda, cuda:N, mps (default: the run's own, from config.json)")
    p.add_argument("--steps", type=int, help="train to this many optimizer steps in all, instead of epochs (default: as configured)")
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_resume)


def _add_sample_command(commands) -> None:
    p = commands.add_parser("sample", help="generate images from a VAE, GAN or flow run into a .npy array or a .png grid")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-n", type=int, default=64, help="number of images (default: 64)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.npy: float32 array (N, 28, 28) in [0, 1]; FILE.png: the images as one grid")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--digit", type=int, help="class to generate (conditional models)")
    p.add_argument("--prior", **PRIOR_OPTION)
    _add_sampler_options(p)
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=cmd_sample)


def _add_fit_prior_command(commands) -> None:
    p = commands.add_parser("fit-prior", help="fit a Gaussian mixture to a VAE's training codes, for --prior gmm (better samples)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--components", type=int, default=DEFAULT_COMPONENTS, help=f"mixture components (default: {DEFAULT_COMPONENTS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the code draws and of EM's start (default: 0)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=cmd_fit_prior)


def _add_encode_command(commands) -> None:
    p = commands.add_parser("encode", help="test-set latents z and labels y into a .npz file (AE, VAE)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-o", "--output", required=True, metavar="FILE.npz")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=cmd_encode)


def _add_reconstruct_command(commands) -> None:
    p = commands.add_parser("reconstruct", help="reconstructions of the test set into a .npy array or a .png grid (AE, VAE)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.npy: float32 array (N, 28, 28) in [0, 1]; FILE.png: one grid")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=cmd_reconstruct)


def _add_plot_command(commands) -> None:
    p = commands.add_parser("plot", help="(re)write the figures of a run folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--seed", type=int, default=0, help="seed for samples and interpolations (default: 0)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=cmd_plot)


def _add_lab_command(commands) -> None:
    from .lab import DEFAULT_MODELS

    p = commands.add_parser("lab", help="the whole lab: train the models, write figures and report.html")
    p.add_argument("--out", default="lab", metavar="DIR", help="lab folder: DIR/<model>/ runs and DIR/report.html (default: lab)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated models (default: {','.join(DEFAULT_MODELS)})")
    p.add_argument("--epochs", type=int, help="epochs for every model (default: each entry's lab budget in steps)")
    p.add_argument("--steps", type=int, help="optimizer steps for every model, instead of epochs (default: each entry's lab budget)")
    p.add_argument("--seed", type=int, default=0, help="seed for every model (default: 0)")
    p.add_argument("--data", metavar="DIR", help=DATA_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--precision", choices=("auto", *choices(typing.get_type_hints(TrainConfig)["precision"])), default="auto",
        help="auto: bf16 for the AE/VAE family where a timed probe finds bf16 at least 1.5x faster than fp32 on this device, else fp32; GANs fp32 (default: auto)",
    )
    p.add_argument("--resume", action="store_true", help="reuse finished runs in DIR and resume unfinished ones")
    p.add_argument("--overwrite", action="store_true", help="replace an existing lab folder's runs")
    p.add_argument("--quiet", action="store_true", help="no live progress lines")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files in each run's tb/ folder")
    p.add_argument("--sample-steps", type=int, metavar="N", help="solver steps of the flow models' evaluation samples, 1 to 1000 (default: the model's own)")
    p.add_argument("--solver", choices=SOLVERS, help="ODE solver of the flow models' evaluation samples (default: the model's own)")
    p.add_argument("--sample-shift", type=float, metavar="S", help="time shift of the flow models' evaluation samples' steps (default: the model's own)")
    p.add_argument(
        "--workers", type=int,
        help="entries trained side by side in their own processes (1: one after another; default: one per core, up to the "
        "number of entries; with CUDA one per GPU)",
    )
    p.add_argument("--threads", type=int, help="CPU threads per worker (default: the cores shared out among the workers)")
    p.set_defaults(func=cmd_lab)


def _add_explore_command(commands) -> None:
    p = commands.add_parser("explore", help="a live page in the browser: move through a run's latent space and see the digits")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this computer only)")
    p.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")
    p.set_defaults(func=cmd_explore)


def _add_report_command(commands) -> None:
    p = commands.add_parser("report", help="rewrite report.html of a lab folder from its runs")
    p.add_argument("lab_dir", metavar="DIR")
    p.set_defaults(func=cmd_report)


def _add_eval_command(commands) -> None:
    p = commands.add_parser("eval", help="measure a run: reconstruction, ELBO / IWAE, FID, precision / recall, classes")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--n-samples", type=int, default=10000, metavar="N", help="samples for FID, precision / recall, classes (default: 10000)")
    p.add_argument("--iw-samples", type=int, default=100, metavar="K", help="importance samples per test digit for the IWAE bound (default: 100; papers: 5000)")
    p.add_argument(
        "--iw-digits", type=int, default=IW_TEST_DIGITS, metavar="N",
        help=f"the first N test digits for the ELBO / IWAE bounds (0: all; default: {IW_TEST_DIGITS}, a bounded cost)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--prior", **PRIOR_OPTION)
    p.add_argument("--no-save", action="store_true", help="do not write RUN_DIR/eval.json (eval-gmm.json with --prior gmm)")
    _add_sampler_options(p)
    p.add_argument(
        "--density-digits", type=int, default=DENSITY_DIGITS, metavar="N",
        help=f"test digits scored in bits/dim by a model with an exact density (flow; default: {DENSITY_DIGITS})",
    )
    p.set_defaults(func=cmd_eval)


def _add_classifier_command(commands) -> None:
    p = commands.add_parser("classifier", help="the MNIST classifier behind FID and the class metrics")
    tasks = p.add_subparsers(dest="task", required=True, parser_class=_Parser, metavar="TASK")
    t = tasks.add_parser("train", help="train it (seeded) on the training digits and save it with its provenance")
    t.add_argument("-o", "--out", metavar="PATH", help="weights file, PATH.safetensors; its provenance goes beside it as .json (default: ./mnist_classifier.safetensors)")
    t.add_argument("--replace-shipped", action="store_true", help="write over the classifier shipped in the package, which every FID uses (default: never)")
    t.add_argument("--epochs", type=int, help="passes over the training digits (default: 20)")
    t.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    t.add_argument("--data", metavar="DIR", help=DATA_HELP)
    t.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    t.set_defaults(func=cmd_classifier_train)
    t = tasks.add_parser("test", help="accuracy of the classifier on the test split")
    t.add_argument("--weights", metavar="PATH", help="weights file (default: the shipped one)")
    t.add_argument("--data", metavar="DIR", help=DATA_HELP)
    t.set_defaults(func=cmd_classifier_test)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .utils import reuse_freed_memory

    reuse_freed_memory()
    try:
        args.func(args)
    except GenlabError as e:
        from .distributed import env_rank

        if env_rank() == 0 or getattr(e, "speaks", False):  # under torchrun: rank 0, or the survivor naming a lost rank
            print(f"genlab: error: {one_line(e)}", file=sys.stderr)
        return e.exit_status  # 2; 130 (128 + SIGINT) for a run stopped by Ctrl-C
    except OSError as e:  # disk full, permissions: say which file, keep what was written
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"genlab: error: {one_line(f'{e.strerror or e}{where}')}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

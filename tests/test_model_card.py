"""The model card RUN/README.md (genlab.modelcard): Hub metadata that parses, metrics equal to
eval.json's, and hostile strings that stay text."""

from __future__ import annotations

import html
import json
import re
import shutil

import pytest

from conftest import QUIET, run_cli, tiny_train_config, write_idx_folder

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

EVAL_OPTIONS = ("--n-samples", "50", "--iw-samples", "2", "--device", "cpu")
HOSTILE = "<img src=x onerror=alert(1)> **bold** _it_ [link](javascript:alert(1)) `code` | pipe #hash ~~del~~ 'q' \"dq\": - 1."


def split_card(run_dir) -> tuple[dict, str]:
    """(front matter parsed by PyYAML, Markdown body) of the run's card."""
    text = (run_dir / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert match, "the card starts with a --- YAML block ---"
    return yaml.safe_load(match.group(1)), match.group(2)


def rendered_text(markdown_html: str) -> str:
    """What a reader sees of rendered HTML: the text, tags removed, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", markdown_html))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, session_data_dir, tiny_bundle):
    from genlab import fit

    return fit(tiny_train_config("vae", session_data_dir), None, tmp_path_factory.mktemp("card") / "vae", data=tiny_bundle, **QUIET)


def test_a_card_written_when_training_ends_says_there_are_no_metrics_yet(vae_run):
    meta, body = split_card(vae_run)
    assert meta["library_name"] == "genlab"
    assert {"mnist", "vae", "autoencoder", "unconditional-image-generation"} <= set(meta["tags"])
    assert meta["datasets"] == ["ylecun/mnist"] and meta["pipeline_tag"] == "unconditional-image-generation"
    assert "model-index" not in meta
    assert "No metrics yet" in body and "genlab eval" in body
    config = json.loads((vae_run / "config.json").read_text())
    assert f"{config['parameters']:,} parameters" in body and "latent size 2" in body
    assert config["data"]["sha256"] in body
    assert "genlab.load_run(\"vae\")" in body and "genlab sample vae" in body


def test_eval_puts_every_metric_of_eval_json_in_the_model_index(vae_run, tmp_path):
    run = shutil.copytree(vae_run, tmp_path / "vae")
    code, _, err = run_cli("eval", run, *EVAL_OPTIONS)
    assert code == 0, err
    meta, body = split_card(run)
    measured = json.loads((run / "eval.json").read_text())
    (index,) = meta["model-index"]
    (result,) = index["results"]
    assert index["name"] == "vae" and result["dataset"]["split"] == "test"
    card_metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert card_metrics == measured["metrics"]  # exactly: every one, the same float
    assert "No metrics yet" not in body
    for name in measured["metrics"]:
        if not name.startswith("class_frac_"):  # those ten share one row
            assert name.replace("_", "\\_") in body
    assert f"8: {measured['metrics']['class_frac_8']:.1%}" in body
    for note in measured["notes"][:2]:  # the caveats, in words
        assert rendered_text(_markdown(note.split(":")[0])) in rendered_text(_markdown(body))


def test_fit_prior_and_eval_with_it_update_the_card(vae_run, tmp_path):
    run = shutil.copytree(vae_run, tmp_path / "vae")
    code, _, err = run_cli("fit-prior", run, "--components", "3", "--device", "cpu")
    assert code == 0, err
    assert "Gaussian mixture of 3 components" in split_card(run)[1]
    code, _, err = run_cli("eval", run, "--prior", "gmm", *EVAL_OPTIONS)
    assert code == 0, err
    meta, _ = split_card(run)
    (result,) = meta["model-index"][0]["results"]  # eval-gmm.json alone: eval.json was not written
    assert "eval-gmm.json" in result["task"]["name"]
    assert {m["type"]: m["value"] for m in result["metrics"]} == json.loads((run / "eval-gmm.json").read_text())["metrics"]


def _markdown(text: str) -> str:
    markdown = pytest.importorskip("markdown", reason="the Markdown package comes with tensorboard (pip install -e '.[test]')")
    return markdown.markdown(text, extensions=["tables", "fenced_code"])


def test_hostile_run_and_data_folder_names_stay_text(tmp_path, monkeypatch):
    """A run folder and a data folder named with HTML, Markdown and YAML syntax: the YAML still
    parses to the name, and the rendered body shows the name as text, with no tag or link."""
    from genlab import fit

    data = write_idx_folder(tmp_path / f"data {HOSTILE}", n_train=64, n_test=20)
    run = fit(tiny_train_config("ae", data), None, tmp_path / HOSTILE, **QUIET)
    code, _, err = run_cli("eval", run, *EVAL_OPTIONS)
    assert code == 0, err
    meta, body = split_card(run)
    assert meta["model-index"][0]["name"] == HOSTILE
    page = _markdown(body)
    for made in ("<img", "<strong>", "<em>", "href", "<del>"):
        assert made not in page, made
    # Python-Markdown keeps the backslash of \~ (CommonMark and the Hub's GFM drop it)
    seen = rendered_text(page).replace("\\~", "~")
    assert HOSTILE in seen  # the heading and the usage code show the name exactly
    assert f"data {HOSTILE}" in seen  # the data folder, in the settings table
    assert page.count("<table>") == 4  # training facts, settings, losses, metrics: no | broke out of a cell


def test_yaml_scalars_read_back_exactly():
    from genlab.modelcard import yaml_block

    values = {"floats": [1e-05, 0.1 + 0.2, -3.5e20, 7.0, float("inf")], "ints": [0, -2], "strings": [HOSTILE, "null", "yes", "1.5", "\x85\u2028\U0001f600", "a: b # c"]}
    assert yaml.safe_load("\n".join(yaml_block(values))) == values


def test_lab_entries_each_get_a_card_with_their_metrics_and_the_report_links_them(tmp_path, monkeypatch):
    import genlab.evaluate as evaluate_module
    from genlab.lab import run_lab

    real = evaluate_module.evaluate_run
    monkeypatch.setattr(evaluate_module, "evaluate_run", lambda *a, **k: real(*a, **dict(k, n_samples=50, iw_samples=2)))
    data = write_idx_folder(tmp_path / "idx", n_train=64, n_test=20)
    page = run_lab(tmp_path / "lab", ["ae", "gan"], epochs=1, data_dir=str(data), device="cpu", workers=1, **QUIET).read_text()
    for name in ("ae", "gan"):
        meta, body = split_card(tmp_path / "lab" / name)
        metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
        assert metrics == json.loads((tmp_path / "lab" / name / "eval.json").read_text())["metrics"]
        assert "](figures/" in body  # the lab drew the figures before the card's last update
        assert page.count(f"<a href='{name}/README.md'>model card</a>") == 2  # in the summary and in its section
    # each configuration as a table of what differs from the model's defaults, not a JSON line
    assert page.count("<td>epochs</td><td>1</td>") == 2 and page.count("<td>neighbor_weight</td><td>0.3</td><td>0</td>") == 1
    assert '"train": {' not in page

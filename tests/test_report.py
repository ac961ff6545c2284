"""report.html with the three families: reconstruction (VAE), adversarial (GAN) and flow side by
side, the flow's path from noise to digit, FID against network evaluations, the two likelihoods."""

from __future__ import annotations

import base64
import re
import shutil

import pytest

from genlab.evaluate import evaluate_run, write_eval
from genlab.report import FAMILY_TEXT, write_report

SMALL = dict(n_samples=40, iw_samples=2, density_digits=2, nfe_samples=20)


@pytest.fixture(scope="module")
def three_family_page(tiny_runs, tiny_bundle, tmp_path_factory):
    """report.html of a lab folder holding a VAE, a GAN and a flow, each evaluated (small counts)."""
    lab = tmp_path_factory.mktemp("lab")
    for name in ("vae", "gan", "flow"):
        shutil.copytree(tiny_runs[name], lab / name)
        write_eval(lab / name, evaluate_run(lab / name, data=tiny_bundle, **SMALL))
    return write_report(lab).read_text(encoding="utf-8")


def test_the_report_compares_three_families_each_with_its_text(three_family_page):
    assert "<h2>Reconstruction-based vs adversarial vs flow</h2>" in three_family_page
    for family, members in (("Reconstruction-based", "vae"), ("Adversarial", "gan"), ("Flow", "flow")):
        assert f"<h3>{family}: {members}</h3>" in three_family_page
    for text in FAMILY_TEXT.values():
        assert text[:60] in three_family_page
    assert "id='flow'" in three_family_page and "flow (flow)" in three_family_page


def test_the_report_draws_fid_against_evaluations_with_the_gans_point_and_the_sample_count(three_family_page):
    section = three_family_page.split("<h3>Sample quality against sampling cost</h3>")[1].split("<h3>")[0]
    (png,) = re.findall(r"src='data:image/png;base64,([^']+)'", section)
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "20 samples per point" in section
    header = re.search(r"<tr><th>model</th><th>samples</th>(.*?)</tr>", section).group(1)
    assert re.findall(r"NFE (\d+)", header) == ["1", "2", "4", "8", "16", "32"]
    rows = dict(re.findall(r"<tr><td>(\w+)</td><td>20</td>(.*?)</tr>", section))
    assert set(rows) == {"vae", "gan", "flow"}
    assert rows["flow"].count("<td></td>") == 0 and rows["gan"].count("<td></td>") == 5  # the GAN: one point, at NFE 1


def test_the_report_shows_the_flows_trajectory_and_why_its_bits_per_dim_are_not_the_vaes_scale(three_family_page):
    assert "<h3>Along t: the noise becoming a digit</h3>" in three_family_page
    assert "flow: Along t: the noise becoming a digit" in three_family_page
    note = three_family_page.split("<h3>Two likelihoods, two scales</h3>")[1].split("</p>")[0]
    assert re.search(r"flow: [\d.]+ bits/dim", note) and re.search(r"vae: -?[\d.]+ nats per digit", note)
    assert "Bernoulli" in note and "dequantisation" in note


def test_a_lab_without_an_iterative_model_has_no_fid_against_evaluations(tiny_runs, tiny_bundle, tmp_path):
    lab = tmp_path / "lab"
    shutil.copytree(tiny_runs["gan"], lab / "gan")
    write_eval(lab / "gan", evaluate_run(lab / "gan", data=tiny_bundle, n_samples=40, nfe_samples=20))
    page = write_report(lab).read_text(encoding="utf-8")
    assert "<h2>Adversarial</h2>" in page and "Sample quality against sampling cost" not in page

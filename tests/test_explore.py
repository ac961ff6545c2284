"""`genlab explore` without a browser: what the page asks of a run (decode, seeds, readings,
nearest training digit), the server's answers to good and bad requests, the command itself,
and report.html's offline explorer."""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, run_cli

from genlab import MODELS, load_run
from genlab.explore import Explorer, RequestError
from genlab.explore.server import MAX_BODY
from genlab.explore.session import MAX_CODES, Z_LIMIT, pca_view
from genlab.models.sampling import SamplerOptions


def pixels(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=np.uint8)


@pytest.fixture(scope="module")
def explorers(tiny_runs, tiny_bundle):
    """name -> Explorer, built once per model for this file."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Explorer(load_run(tiny_runs[name]), tiny_bundle)
        return cache[name]

    return get


def a_request(explorer: Explorer, n: int = 1) -> dict:
    """A valid decode request of n codes at the view's origin."""
    body = {"z": [explorer.origin.tolist()] * n}
    if explorer.model.conditional:
        body["digits"] = list(range(n))
    return body


# --------------------------------------------------------------------------------------------
# The API on its own
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_decodes_a_point_with_a_reading_and_its_nearest_training_digit(explorers, name):
    explorer = explorers(name)
    info = json.loads(json.dumps(explorer.info()))  # what the page receives: plain JSON
    assert info["latent_dim"] == len(info["origin"]) and len(info["axes"]) == len(info["ranges"]) >= (0 if info["iterative"] else 2)
    assert (info["points"] is not None) == info["can_encode"]
    reply = explorer.decode(a_request(explorer, 3))
    assert len(reply["images"]) == len(reply["readings"]) == 3
    for image, reading in zip(reply["images"], reply["readings"]):
        assert pixels(image).shape == (784,)
        assert 0 <= reading["digit"] <= 9 and 0 < reading["confidence"] <= 1
        assert reading["nearest"]["distance"] >= 0 and pixels(reading["nearest"]["image"]).shape == (784,)


def test_an_autoencoder_decodes_a_test_digits_code_into_its_reconstruction(explorers, tiny_runs, tiny_bundle):
    explorer, run = explorers("ae"), load_run(tiny_runs["ae"])
    x = tiny_bundle.tensors("test")[0][:4]
    reply = explorer.decode({"z": run.encode(x).tolist()})
    expected = (run.reconstruct(x).reshape(4, 784) * 255).round().to(torch.uint8).numpy()
    assert np.abs(np.stack([pixels(i) for i in reply["images"]]).astype(int) - expected).max() <= 1


def test_a_gan_decodes_a_seeds_z_into_the_runs_sample_for_that_seed(explorers, tiny_runs):
    explorer, run = explorers("gan"), load_run(tiny_runs["gan"])
    z = explorer.seed({"seed": 7})["z"]
    assert explorer.seed({"seed": 7})["z"] == z != explorer.seed({"seed": 8})["z"]
    image = pixels(explorer.decode({"z": [z]})["images"][0]).astype(int)
    expected = (run.sample(1, seed=7).reshape(784) * 255).round().numpy()
    assert np.abs(image - expected).max() <= 1


def test_a_conditional_model_decodes_the_same_code_as_every_digit(explorers):
    explorer = explorers("cgan")
    reply = explorer.decode(a_request(explorer, 10))
    images = {pixels(i).tobytes() for i in reply["images"]}
    assert len(images) > 1  # the digit changes what is drawn


def test_the_nearest_training_digit_of_a_training_digit_is_itself(explorers, tiny_bundle):
    explorer = explorers("vae")
    x, _ = tiny_bundle.tensors("train")
    _, _, index, distance = explorer.measure(x[[3, 50, 199]])
    assert index.tolist() == [3, 50, 199]
    assert distance.max() < 1e-2
    brighter = (x[[3]] + 0.1).clamp(0, 1)
    assert explorer.measure(brighter)[2].item() == 3 and explorer.measure(brighter)[3].item() > 0.5


def test_a_pca_view_has_orthonormal_axes_in_order_of_spread_and_2d_codes_keep_their_axes():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(300, 5)) * np.array([5, 0.1, 3, 1, 0.5]) + 2
    origin, axes = pca_view(codes, 4)
    assert axes.shape == (4, 5) and np.allclose(axes @ axes.T, np.eye(4), atol=1e-8)
    spread = ((codes - origin) @ axes.T).std(0)
    assert np.all(np.diff(spread) < 0) and np.allclose(origin, codes.mean(0))
    origin, axes = pca_view(codes[:, :2], 4)
    assert np.all(origin == 0) and np.all(axes == np.eye(2))


BAD_BODIES = [
    ({"z": [[float("nan"), 0.0]]}, "finite"),
    ({"z": [[float("inf"), 0.0]]}, "finite"),
    ({"z": [[1e300, 0.0]]}, "finite"),
    ({"z": [[10**400, 0]]}, "finite"),
    ({"z": [[Z_LIMIT + 1, 0.0]]}, "within"),
    ({"z": [[0.0, 0.0, 0.0]]}, "list of 2 numbers"),
    ({"z": [[0.0]]}, "list of 2 numbers"),
    ({"z": [0.0, 0.0]}, "list of 2 numbers"),
    ({"z": []}, "non-empty"),
    ({"z": "0,0"}, "non-empty"),
    ({}, "non-empty"),
    ({"z": [[0.0, 0.0]] * (MAX_CODES + 1)}, "at most"),
    ({"z": [["0", 0.0]]}, "numbers only"),
    ({"z": [[True, 0.0]]}, "numbers only"),
    ({"z": [[None, 0.0]]}, "numbers only"),
    ({"z": [[0.0, 0.0]], "digits": [3]}, "not conditional"),
]


@pytest.mark.parametrize("body, message", BAD_BODIES, ids=[m + str(i) for i, (_, m) in enumerate(BAD_BODIES)])
def test_a_bad_code_is_refused_with_a_short_message(explorers, body, message):
    with pytest.raises(RequestError, match=message) as e:
        explorers("vae").decode(body)
    assert e.value.status == 400 and len(str(e.value)) < 120


@pytest.mark.parametrize("digits", [[10], [-1], ["3"], [3.0], [True], [None], 3, [1, 2], None])
def test_a_digit_outside_0_to_9_or_a_missing_one_is_refused(explorers, digits):
    with pytest.raises(RequestError, match="digit"):
        explorers("cvae").decode({"z": [[0.0, 0.0]], **({} if digits is None else {"digits": digits})})


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, "1", True, None])
def test_a_bad_seed_is_refused(explorers, seed):
    with pytest.raises(RequestError, match="seed"):
        explorers("gan").seed({"seed": seed})


def test_a_model_without_a_prior_has_no_seeds(explorers):
    with pytest.raises(RequestError, match="no prior"):
        explorers("ae").seed({"seed": 1})


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, parsed JSON or raw bytes) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    is_json = response.getheader("Content-Type", "").startswith("application/json")
    return response.status, response, json.loads(data) if is_json and data else data


def post(server, path: str, obj) -> tuple[int, object]:
    status, _, data = request(server, "POST", path, json.dumps(obj).encode())
    return status, data


def test_the_server_serves_its_page_and_api_with_a_strict_content_policy(explore_server, tiny_runs):
    server = explore_server(tiny_runs["vae"])
    assert server.url.startswith("http://127.0.0.1:")
    for path, kind in (("/", "text/html"), ("/explore.js", "text/javascript"), ("/explore.css", "text/css"), ("/api/info", "application/json")):
        status, response, _ = request(server, "GET", path)
        assert status == 200 and response.getheader("Content-Type").startswith(kind)
        assert "default-src 'none'" in response.getheader("Content-Security-Policy")
        assert response.getheader("X-Content-Type-Options") == "nosniff"
    status, _, page = request(server, "GET", "/")
    assert not re.search(rb"(src|href)=[\"']?(https?:)?//", page)  # nothing from the internet
    status, reply = post(server, "/api/decode", {"z": [[0.5, -0.5]]})
    assert status == 200 and len(reply["images"]) == 1


TRAVERSALS = [
    "/../config.json",
    "/%2e%2e/config.json",
    "/%2E%2E%2Fconfig.json",
    "/..%2fconfig.json",
    "/explore.js/../../config.json",
    "//etc/passwd",
    "/config.json",
    "/model.safetensors",
    "/figures/link",
    "/api/../config.json",
    "/./explore.js",
    "/explore.js%00.png",
    "/static/explore.js",
    "http://127.0.0.1/config.json",
    "/..\\..\\config.json",
]


def test_no_request_reaches_a_file_of_the_run_or_the_machine(explore_server, tiny_runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs["vae"], run_dir)
    (run_dir / "figures").mkdir(exist_ok=True)
    (run_dir / "figures" / "link").symlink_to("/etc/passwd")
    server = explore_server(run_dir)
    secret = (run_dir / "config.json").read_bytes()[:40]
    for path in TRAVERSALS:
        status, _, body = request(server, "GET", path)
        assert status == 404, path
        raw = json.dumps(body).encode()
        assert secret not in raw and b"root:" not in raw and len(raw) < 300


def raw_request(server, data: bytes) -> bytes:
    """Send bytes as they are; the server's whole answer (it closes after an error)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


BAD_HTTP = [  # (what, raw request, status)
    ("a NaN", b'{"z": [[NaN, 0]]}', 400),
    ("Infinity", b'{"z": [[Infinity, 0]]}', 400),
    ("a number too large for a float", b'{"z": [[1e999, 0]]}', 400),
    ("an integer of 5000 digits", b'{"z": [[' + b"9" * 5000 + b", 0]]}", 400),
    ("deep nesting", b'{"z": ' + b"[" * 30000 + b"]" * 30000 + b"}", 400),
    ("not JSON", b"z=1,2", 400),
    ("not UTF-8", b'{"z": "\xff\xfe"}', 400),
    ("a JSON list", b"[[0, 0]]", 400),
    ("a digit outside 0-9", b'{"z": [[0, 0]], "digits": [10]}', 400),
]


@pytest.mark.parametrize("what, body, status", BAD_HTTP, ids=[w for w, _, _ in BAD_HTTP])
def test_a_bad_body_gets_a_4xx_with_a_short_message(explore_server, tiny_runs, what, body, status):
    server = explore_server(tiny_runs["vae"])
    got, response, reply = request(server, "POST", "/api/decode", body)
    assert got == status and isinstance(reply["error"], str) and 0 < len(reply["error"]) < 160
    assert response.getheader("Connection") == "close"


def test_bad_requests_get_4xx_answers(explore_server, tiny_runs):
    server = explore_server(tiny_runs["vae"])
    assert request(server, "GET", "/nowhere")[0] == 404
    assert request(server, "POST", "/")[0] == 405
    assert request(server, "GET", "/api/decode")[0] == 405
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"):
        assert request(server, method, "/api/decode")[0] == 405, method
    assert request(server, "POST", "/api/decode", b"{}", {"Content-Type": "text/plain"})[0] == 415
    assert request(server, "GET", "/", headers={"Host": "evil.example:80"})[0] == 400  # DNS rebinding
    assert request(server, "POST", "/api/seed", b'{"seed": 1}')[0] == 200
    assert request(server, "POST", "/api/seed", b'{"seed": -1}')[0] == 400
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    big = b"POST /api/decode HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    assert status_of(raw_request(server, big)) == 413  # refused before the body is read
    no_length = b"POST /api/decode HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n\r\n"
    assert status_of(raw_request(server, no_length)) == 411
    chunked = b"POST /api/decode HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    assert status_of(raw_request(server, chunked)) == 411
    bad_length = b"POST /api/decode HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\nContent-Length: -5\r\n\r\n"
    assert status_of(raw_request(server, bad_length)) == 400
    assert b"Bad request" in raw_request(server, b"GARBAGE\r\n\r\n")  # HTTP/0.9 style: no status line
    many_headers = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
    assert status_of(raw_request(server, many_headers)) == 431
    assert status_of(raw_request(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")) == 414


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["int", "float", "str", "none", "bool", "list", "dict", "special"]
    kind = rng.choice(kinds if depth < 3 else kinds[:5])
    if kind == "int":
        return rng.choice([0, 1, -1, 9, 10, 2**31, -(2**63), 10**30])
    if kind == "float":
        return rng.choice([0.5, -3.25, 1e308, -1e-308, 49.9, 50.1])
    if kind == "str":
        return rng.choice(["", "0", "../config.json", "\u0000", "é" * 10])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 65]))]
    if kind == "dict":
        return {rng.choice(["z", "digits", "seed", "x"]): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return "NaN"  # replaced by the bare constant below


def test_the_server_keeps_serving_after_a_fuzz_of_bad_requests(explore_server, tiny_runs):
    server = explore_server(tiny_runs["cgan"])
    rng = random.Random(0)
    paths = ["/api/decode", "/api/seed", "/api/info", "/", "/x", "/api/decode?z=1", "/%2e%2e/"]
    statuses = []
    for _ in range(150):
        value = {rng.choice(["z", "digits", "seed"]): random_value(rng) for _ in range(rng.randint(0, 3))}
        body = json.dumps(value).replace('"NaN"', rng.choice(["NaN", "-Infinity", "1e999"])).encode()
        if rng.random() < 0.15:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))  # not even JSON
        method = rng.choice(["POST", "POST", "POST", "GET", "PUT"])
        statuses.append(request(server, method, rng.choice(paths), body)[0])
    assert all(200 <= s < 500 for s in statuses), sorted(set(statuses))
    assert sum(400 <= s < 500 for s in statuses) > 100
    status, reply = post(server, "/api/decode", {"z": [[0.0] * 64] * 10, "digits": list(range(10))})
    assert status == 200 and len(reply["images"]) == 10


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_explore_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path):
    code, _, err = run_cli("explore", tmp_path / "missing", "--no-browser")
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err


def test_explore_refuses_a_port_in_use_and_a_bad_port(tiny_runs):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run_cli("explore", tiny_runs["vae"], "--no-browser", "--port", taken.getsockname()[1])
    assert code == 2 and err.count("\n") == 1 and "--port" in err
    code, _, err = run_cli("explore", tiny_runs["vae"], "--no-browser", "--port", 70000)
    assert code == 2 and "--port must be 0 to 65535" in err


def test_explore_warns_when_it_listens_beyond_loopback_and_stops_on_ctrl_c(tiny_runs, monkeypatch):
    from genlab.explore.server import ExploreServer

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ExploreServer, "serve_forever", interrupted)
    code, out, err = run_cli("explore", tiny_runs["gan"], "--no-browser", "--host", "0.0.0.0")
    assert code == 0 and "warning: listening on 0.0.0.0, not loopback" in err
    assert re.search(r"at http://0\.0\.0\.0:\d+/", out) and out.rstrip().endswith("stopped")


def test_genlab_explore_prints_its_url_serves_and_stops_on_sigint(tiny_runs):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    command = [sys.executable, "-c", "import sys; from genlab.cli import main; sys.exit(main())", "explore", str(tiny_runs["vae"]), "--no-browser"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/info")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped" and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# report.html's explorer
# --------------------------------------------------------------------------------------------


def test_report_embeds_an_offline_explorer_for_each_2d_model_only(tiny_runs, tmp_path):
    from genlab.report import write_report

    lab = tmp_path / "lab"
    for name in ("vae", "cvae", "gan"):
        shutil.copytree(tiny_runs[name], lab / name)
    page = write_report(lab).read_text(encoding="utf-8")
    blocks = re.findall(r"<script type='application/json' id='gx-data-(\w+)'>(.*?)</script>", page, re.S)
    assert sorted(name for name, _ in blocks) == ["cvae", "vae"]  # the GAN's 64-D z is not a map
    for name, text in blocks:
        data = json.loads(text)
        cells = data["grid"] ** 2 * (10 if name == "cvae" else 1)
        assert len(data["cells"]["digit"]) == len(data["cells"]["nearest"]) == cells
        assert data["sprite"].startswith("data:image/png;base64,") and len(text) < 3_000_000
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)
    assert "id='gan'" in page and "Samples" in page  # the report's own content stays


# --------------------------------------------------------------------------------------------
# An iterative model (a flow): seeds, steps, guidance, interpolation between seeds' noises
# --------------------------------------------------------------------------------------------


def flow_request(explorer: Explorer, **fields) -> dict:
    """A valid /api/flow body: seed 3, 4 steps, digit 7 for a conditional flow."""
    body = {"seed": 3, "steps": 4, **({"digits": [7]} if explorer.model.conditional else {})}
    body.update(fields)
    return body


def test_a_flow_page_has_no_map_but_a_step_slider_and_guidance_only_when_conditional(explorers):
    info = json.loads(json.dumps(explorers("flow").info()))
    assert info["iterative"] and info["axes"] == [] and info["points"] is None
    assert info["sampler"]["max_steps"] == 32 and 1 <= info["sampler"]["default_steps"] <= 32
    assert info["sampler"]["guidance"] is None
    guidance = explorers("cflow").info()["sampler"]["guidance"]
    assert guidance["min"] == 0 and guidance["max"] >= guidance["default"] == 1
    assert explorers("gan").info()["sampler"] is None


@pytest.mark.parametrize("steps", [1, 3, 32])
def test_a_flow_answer_is_the_runs_sample_for_that_seed_and_step_count(explorers, tiny_runs, steps):
    explorer, run = explorers("flow"), load_run(tiny_runs["flow"])
    reply = explorer.flow(flow_request(explorer, steps=steps))
    expected = (run.sample(1, seed=3, steps=steps).reshape(784) * 255).round().numpy()
    assert np.abs(pixels(reply["image"]).astype(int) - expected).max() <= 1
    assert reply["frames"][-1] == reply["image"] and len(reply["frames"]) == min(8, steps + 1)
    grid = run.model.solve_times(SamplerOptions(steps=steps))  # the states kept are on the solver's (shifted) grid
    assert reply["times"] == [round(grid[round(i * steps / (len(reply["times"]) - 1))], 4) for i in range(len(reply["times"]))]
    assert reply["times"][0] == 0 and reply["times"][-1] == 1 and reply["times"] == sorted(reply["times"])
    assert reply["nfe"] == run.model.nfe(SamplerOptions(steps=steps)) and reply["steps"] == steps
    assert 0 <= reply["reading"]["digit"] <= 9 and reply["reading"]["nearest"]["distance"] >= 0


def test_more_steps_change_the_flows_picture_and_the_seed_its_noise(explorers):
    explorer = explorers("flow")
    one, eight = (explorer.flow(flow_request(explorer, steps=s)) for s in (1, 8))
    assert one["frames"][0] == eight["frames"][0]  # the same noise x0
    assert one["image"] != eight["image"]
    assert explorer.flow(flow_request(explorer, seed=4))["frames"][0] != one["frames"][0]


def test_guidance_changes_a_conditional_flows_picture(explorers):
    explorer = explorers("cflow")
    plain, guided = (explorer.flow(flow_request(explorer, guidance=g)) for g in (1.0, 4.0))
    assert plain["image"] != guided["image"]
    assert explorer.flow(flow_request(explorer))["image"] == plain["image"]  # no guidance given: 1, the plain conditional field


def test_interpolation_runs_between_two_seeds_noises_along_the_sphere(explorers, tiny_runs):
    explorer, run = explorers("flow"), load_run(tiny_runs["flow"])
    reply = explorer.interpolate({"seeds": [3, 9]})
    assert len(reply["images"]) == len(reply["readings"]) == 10
    for end, seed in ((0, 3), (-1, 9)):  # the ends are the seeds' own samples (default sampler)
        expected = (run.sample(1, seed=seed).reshape(784) * 255).round().numpy()
        assert np.abs(pixels(reply["images"][end]).astype(int) - expected).max() <= 1
    from genlab.plots import slerp

    a, b = explorer.noise(3), explorer.noise(9)
    middle = slerp(a, b, torch.tensor([[0.5]]))[0]
    assert abs(middle.norm() - (a.norm() + b.norm()) / 2) < 0.05 * a.norm()  # on the sphere, not inside it
    assert (a + b).norm() / 2 < 0.8 * a.norm()  # where the straight line's midpoint would be


BAD_FLOW = [  # (model, changes to a good request, what the message names)
    ("flow", {"steps": 0}, "steps"),
    ("flow", {"steps": 33}, "steps"),
    ("flow", {"steps": 4.0}, "steps"),
    ("flow", {"steps": "4"}, "steps"),
    ("flow", {"steps": True}, "steps"),
    ("flow", {"steps": None}, "steps"),
    ("flow", {"seed": -1}, "seed"),
    ("flow", {"seed": 2**31}, "seed"),
    ("flow", {"seed": 1.5}, "seed"),
    ("flow", {"guidance": 1.0}, "not conditional"),
    ("flow", {"digits": [3]}, "not conditional"),
    ("cflow", {"guidance": -0.5}, "guidance"),
    ("cflow", {"guidance": 8.5}, "guidance"),
    ("cflow", {"guidance": 1e309}, "guidance"),
    ("cflow", {"guidance": "2"}, "guidance"),
    ("cflow", {"digits": [10]}, "digit"),
    ("cflow", {"digits": None}, "digits"),
    ("gan", {}, "one step"),
]


@pytest.mark.parametrize("name, change, message", BAD_FLOW, ids=[f"{n}-{m}{i}" for i, (n, _, m) in enumerate(BAD_FLOW)])
def test_a_bad_flow_request_is_refused_with_a_short_message(explorers, name, change, message):
    explorer = explorers(name)
    body = {**(flow_request(explorer) if explorer.model.iterative else {"seed": 1, "steps": 4}), **change}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(RequestError, match=message) as e:
        explorer.flow(body)
    assert e.value.status == 400 and len(str(e.value)) < 120


@pytest.mark.parametrize("body, message", [
    ({"seeds": [1]}, "two seeds"), ({"seeds": [1, 2, 3]}, "two seeds"), ({"seeds": "1,2"}, "two seeds"), ({}, "two seeds"),
    ({"seeds": [1, -2]}, "seed"), ({"seeds": [1, 2.5]}, "seed"), ({"seeds": [1, 2], "digits": [1] * 10}, "not conditional"),
])
def test_a_bad_interpolation_request_is_refused(explorers, body, message):
    with pytest.raises(RequestError, match=message):
        explorers("flow").interpolate(body)


def test_the_server_answers_flow_requests_and_refuses_bad_ones_with_4xx(explore_server, tiny_runs):
    server = explore_server(tiny_runs["cflow"])
    status, reply = post(server, "/api/flow", {"seed": 1, "steps": 32, "digits": [2], "guidance": 2.5})
    assert status == 200 and len(reply["frames"]) == 8
    status, reply = post(server, "/api/interpolate", {"seeds": [1, 2], "digits": [5] * 10})
    assert status == 200 and len(reply["images"]) == 10
    for body in (
        b'{"seed": 1, "steps": 33, "digits": [2]}', b'{"seed": 1, "steps": 0, "digits": [2]}',
        b'{"seed": -1, "steps": 4, "digits": [2]}', b'{"seed": 1, "steps": 4, "digits": [2], "guidance": NaN}',
        b'{"seed": 1, "steps": 4, "digits": [2], "guidance": 100}', b'{"seed": 1, "steps": 4', b"[1, 4]",
    ):
        got, _, reply = request(server, "POST", "/api/flow", body)
        assert got == 400 and 0 < len(reply["error"]) < 160, body
    assert request(server, "GET", "/api/flow")[0] == 405
    assert post(server, "/api/flow", {"seed": 1, "steps": 4, "digits": [2]})[0] == 200  # still serving


def test_report_embeds_a_flow_explorer_of_seeds_and_step_counts(tiny_runs, tmp_path):
    from genlab.explore.offline import FLOW_SEEDS, FLOW_STEPS
    from genlab.report import write_report

    lab = tmp_path / "lab"
    shutil.copytree(tiny_runs["flow"], lab / "flow")
    page = write_report(lab).read_text(encoding="utf-8")
    (text,) = re.findall(r"<script type='application/json' id='gx-data-flow'>(.*?)</script>", page, re.S)
    data = json.loads(text)
    cells = FLOW_SEEDS * len(FLOW_STEPS)
    assert data["info"]["iterative"] and data["steps"] == list(FLOW_STEPS) and len(data["seeds"]) == FLOW_SEEDS
    assert len(data["cells"]["digit"]) == len(data["frames"]) == len(data["times"]) == cells
    assert [span[1] for span in data["frames"][: len(FLOW_STEPS)]] == [min(8, s + 1) for s in FLOW_STEPS]
    assert len(text) < 1_500_000
    assert "genlab explore" in page

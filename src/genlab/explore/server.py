"""`genlab explore`'s web server: the standard library's ThreadingHTTPServer over an in-memory
route table.

Why it is safe to put on a port:
  - it never reads a file while serving: the page's three files are read into memory at start
    and every request is looked up, as sent, in a dict of eight paths. A path that is not a key
    (`/../config.json`, `/%2e%2e/`, `//etc/passwd`, a symlink's name) is a 404; there is no
    filesystem path to traverse;
  - it listens on 127.0.0.1 unless told otherwise, and on loopback it answers only requests
    whose Host header names loopback, so a web page elsewhere cannot reach it by DNS rebinding;
  - a POST must be JSON (which a cross-site form cannot send without the browser asking first),
    at most MAX_BODY bytes with a Content-Length; what it says is checked by `session.Explorer`.
    Every refusal is a 4xx with a one-line message, and the connection is closed after it;
  - a stalled client is dropped after REQUEST_TIMEOUT seconds; any other exception in a
    handler is a 500 for that request alone, and the server keeps serving.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import traceback
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Callable

from ..errors import GenlabError
from .session import Explorer, RequestError

MAX_BODY = 64 * 1024  # bytes: a strip of ten 64-number codes is about 7 kB of JSON
REQUEST_TIMEOUT = 10  # seconds a connection may sit idle or half-sent before it is closed
PAGE_FILES = ("page.html", "explore.js", "explore.css")
# The page loads nothing but its own script, style and API; images are drawn on canvases.
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def page_asset(name: str) -> bytes:
    """One of the page's files, shipped as package data."""
    return (resources.files("genlab.explore") / name).read_bytes()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ExploreServer(ThreadingHTTPServer):
    daemon_threads = True  # Ctrl-C does not wait for a browser's open keep-alive connections

    def __init__(self, explorer: Explorer, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.explorer = explorer
        self.verbose = verbose
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), ExploreHandler)
        self.port = self.server_address[1]
        self.loopback = is_loopback(host)
        names = ("127.0.0.1", "localhost", "[::1]")
        self.allowed_hosts = {f"{name}:{self.port}" for name in names} | set(names)
        info = json.dumps(explorer.info()).encode()
        css, js, html = (page_asset(name) for name in ("explore.css", "explore.js", "page.html"))
        # method, path -> (content type, bytes) for fixed answers, or a function of the JSON body
        self.routes: dict[tuple[str, str], tuple[str, bytes] | Callable[[dict], dict]] = {
            ("GET", "/"): ("text/html; charset=utf-8", html),
            ("GET", "/explore.js"): ("text/javascript; charset=utf-8", js),
            ("GET", "/explore.css"): ("text/css; charset=utf-8", css),
            ("GET", "/api/info"): ("application/json", info),
            ("POST", "/api/decode"): explorer.decode,
            ("POST", "/api/seed"): explorer.seed,
            ("POST", "/api/flow"): explorer.flow,  # an iterative model's seed, integrated step by step
            ("POST", "/api/interpolate"): explorer.interpolate,  # between two seeds' noises
        }

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"


class ExploreHandler(BaseHTTPRequestHandler):
    server: ExploreServer
    server_version = "genlab-explore"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # keep-alive: a pointer move costs no new connection
    timeout = REQUEST_TIMEOUT

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes; without this, Nagle's algorithm holds the
        # second one until the browser's delayed ACK, some tens of ms on every pointer move.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __getattr__(self, name: str):
        # http.server looks up do_<METHOD>; every method goes to one dispatcher, so an
        # unknown one (PUT, DELETE, BREW) is a 405 rather than the library's 501.
        if name.startswith("do_"):
            return lambda: self._dispatch(name[3:])
        raise AttributeError(name)

    def _dispatch(self, method: str) -> None:
        try:
            if self.server.loopback and self.headers.get("Host", "") not in self.server.allowed_hosts:
                raise RequestError("this server answers requests for 127.0.0.1 or localhost only", 400)
            path = self.path.split("?", 1)[0]  # the query is ignored; the path is never decoded
            methods = [m for m, p in self.server.routes if p == path]
            if not methods:
                raise RequestError(f"not found: {path[:80]} (this server has only its page and /api/)", 404)
            if method not in methods:
                raise RequestError(f"{method[:20]} is not allowed here; use {', '.join(methods)}", 405)
            route = self.server.routes[(method, path)]
            if callable(route):
                self._send(200, "application/json", json.dumps(route(self._json_body())).encode())
            else:
                self._send(200, *route)
        except RequestError as e:
            self._send_error(e.status, str(e))
        except Exception:  # a bug, not the client's fault: this request fails, the server goes on
            traceback.print_exc(file=sys.stderr)
            self._send_error(500, "internal error")

    def _json_body(self) -> dict:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError("chunked bodies are not accepted: send a Content-Length", 411)
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError("a POST needs a Content-Length", 411)
        if not length.isdigit():
            raise RequestError("Content-Length must be a whole number", 400)
        if int(length) > MAX_BODY:
            raise RequestError(f"request body over {MAX_BODY} bytes", 413)
        if self.headers.get_content_type() != "application/json":
            raise RequestError("the body must be JSON (Content-Type: application/json)", 415)
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: [[[[...]]]]
            raise RequestError(f"the body is not valid JSON ({str(e)[:80]})", 400) from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object", 400)
        return body

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, status: int, message: str) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        self._send(status, "application/json", json.dumps({"error": message}).encode())

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (a malformed request line, a line or header too long): the
        # same short JSON answer as ours, not its HTML page
        self._send_error(code, message or self.responses.get(code, ("error",))[0])

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def make_server(run_dir, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> ExploreServer:
    """Load the run and bind the server (port 0: a free one); GenlabError for what a user can fix."""
    import torch

    from ..runs import load_run
    from .session import decode_threads

    if not 0 <= port <= 65535:
        raise GenlabError(f"--port must be 0 to 65535, got {port}")
    torch.set_num_threads(decode_threads())
    explorer = Explorer(load_run(run_dir, device="cpu"))
    try:
        return ExploreServer(explorer, host, port, verbose=verbose)
    except socket.gaierror:
        raise GenlabError(f"--host {host}: not an address of this machine") from None
    except OSError as e:
        raise GenlabError(f"cannot listen on {host}:{port} ({e.strerror or e}): pick another --port, or leave it out for a free one") from None


def _say(line: str) -> None:
    print(line, flush=True)  # the URL must show at once, also when stdout is a pipe


def serve(run_dir, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True, log: Callable[[str], None] = _say) -> None:
    """`genlab explore`: serve the page until Ctrl-C."""
    server = make_server(run_dir, host, port)
    if not server.loopback:
        print(
            f"genlab: warning: listening on {host}, not loopback: anyone who can reach this machine on port "
            f"{server.port} can use the page and read the run's test digits",
            file=sys.stderr,
        )
    log(f"exploring {run_dir} at {server.url}  (Ctrl-C stops)")
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.server_close()

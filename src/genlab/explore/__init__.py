"""`genlab explore`: move through a trained model's latent space and see the digit there.

    session.py  what the page asks of a run (codes, decodes, seeds, readings), checked
    server.py   the local web server: an in-memory route table on the standard library
    offline.py  the same explorer inside report.html, from precomputed decodings
    page.html, explore.js, explore.css   the page: plain JavaScript and canvases
"""

from .offline import explorer_block
from .server import make_server, serve
from .session import Explorer, RequestError

__all__ = ["Explorer", "RequestError", "explorer_block", "make_server", "serve"]

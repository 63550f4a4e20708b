"""Serve the built book on 127.0.0.1 (no network needed): ``python scripts/serve.py [--port 8000]``.

The site is what ``jupyter-book build .`` writes to ``_build/html``; build it first (``make book``).
The browser tests (``tests/test_site.py``) use :func:`make_server` with ``port=0`` (a free port).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SITE = ROOT / "_build" / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files under ``directory``; logs only failed requests (status >= 400)."""

    def log_request(self, code="-", size="-"):
        if str(code).isdigit() and int(code) >= 400:
            super().log_request(code, size)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A browser that navigates away closes its connections mid-response: not an error of the site.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def make_server(directory: str | Path = DEFAULT_SITE, port: int = 8000, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``directory`` bound to ``host:port`` (``port=0`` picks a free port).

    Call ``serve_forever()`` on it (in a thread if you like) and ``shutdown()`` to stop it.
    """
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise FileNotFoundError(f"no built site at {directory} (index.html missing): run `make book` first")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    return _Server((host, port), handler)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=str(DEFAULT_SITE), help="the built site (default: _build/html)")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0 = any free port; default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    args = p.parse_args(argv)
    try:
        server = make_server(args.dir, args.port, args.host)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e}); try --port 0", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    print(f"Serving {args.dir} at http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

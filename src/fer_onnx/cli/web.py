"""``fer-onnx web``: serve the browser demo (``examples/web``) on a local HTTP server.

    fer-onnx web [--port 8000] [--fetch-runtime]

The server itself is :mod:`fer_onnx.web`; this module parses the command line and runs it
until Ctrl-C (exit code 130).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fer_onnx.web import WebDemoSite, make_server, server_url
from fer_onnx.web_runtime import default_web_root, fetch_runtime

__all__ = ["add_web_parser"]


def _cmd_web(args: argparse.Namespace) -> int:
    if args.fetch_runtime:
        page = default_web_root() if args.root is None else args.root
        print("fetching onnxruntime-web and OpenCV.js with npm ci ...", flush=True)
        args.runtime = fetch_runtime(page, args.runtime)
        print(f"JavaScript runtime in {args.runtime}", flush=True)
    site = WebDemoSite.create(args.root, args.model, args.runtime)
    server = make_server(site, args.host, args.port)
    print(f"fer-onnx web demo: {server_url(server)}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 130
    finally:
        server.server_close()
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port number 0..65535 (0 = any free port), got {text!r}"
        )
    return port


def add_web_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fer-onnx web`` on the CLI's subparsers (``parser.add_subparsers()``).

    Args:
        subparsers: The top-level parser's sub-command action.

    Returns:
        The sub-command's parser; its ``args.func(args)`` returns the exit code.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "web",
        help="serve the browser demo (onnxruntime-web) locally",
        description="Serve the browser demo page with the bundled models; open the printed URL. "
        "The page needs its npm packages (onnxruntime-web, OpenCV.js): `--fetch-runtime` "
        "installs them once with npm (or run `npm ci` in examples/web of a checkout).",
    )
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 = any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the page's folder (default: the installed page, fer_onnx/web_page)",
    )
    p.add_argument(
        "--runtime",
        type=Path,
        default=None,
        help="a folder holding node_modules with onnxruntime-web and OpenCV.js (default: "
        "the page's own, then the --fetch-runtime cache; env FER_ONNX_WEB_RUNTIME)",
    )
    p.add_argument(
        "--fetch-runtime",
        action="store_true",
        help="install the page's npm packages with `npm ci` (Node.js needed) into the cache, "
        "or into --runtime, then serve",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="also serve this classifier (e.g. a stamped foreign model) and start with it",
    )
    p.set_defaults(func=_cmd_web)
    return p

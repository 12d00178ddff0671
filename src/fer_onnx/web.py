"""``fer-onnx web``: serve the browser demo (``examples/web``) on a local HTTP server.

The page runs the bundled YuNet detector and expression classifier on onnxruntime-web. This
server hands it the very model files of the installed package (``/models/NAME.onnx``) and a
small configuration (``/fer-onnx.json``: the model URLs and :class:`~fer_onnx.yunet.
YuNetDetector`'s default settings, read from its signature so the two cannot drift apart).
Every response carries the cross-origin isolation headers that multi-threaded WebAssembly
needs. The page itself (HTML and JavaScript modules, plus ``node_modules`` from ``npm ci``)
lives in the source repository, not in the wheel.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from fer_onnx.errors import FerOnnxError, ModelLoadError
from fer_onnx.recognizer import BUNDLED_MODELS, DEFAULT_MODEL, bundled_model_path
from fer_onnx.yunet import YuNetDetector, bundled_yunet_path

log = logging.getLogger(__name__)

__all__ = [
    "WebDemoError",
    "WebDemoSite",
    "add_web_parser",
    "default_web_root",
    "make_server",
]

_REQUIRED = (
    "index.html",
    "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",
    "node_modules/@techstark/opencv-js/dist/opencv.js",
)
_DETECTOR_SETTINGS = ("score_threshold", "nms_threshold", "top_k", "detect_width")
_MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".png": "image/png",
    ".map": "application/json",
}


class WebDemoError(FerOnnxError):
    """The browser demo cannot be served (page or its npm packages missing, bad model)."""


def default_web_root() -> Path:
    """The page's folder (``examples/web`` of a source checkout).

    The checkout this package was installed from in editable mode, else the current directory
    (a repository clone); the last candidate when neither has the page.
    """
    candidates = [
        Path(__file__).resolve().parents[2] / "examples" / "web",
        Path.cwd() / "examples" / "web",
    ]
    for folder in candidates:
        if (folder / "index.html").is_file():
            return folder
    return candidates[-1]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def detector_defaults() -> dict[str, Any]:
    """:class:`~fer_onnx.yunet.YuNetDetector`'s default settings that the page applies."""
    parameters = inspect.signature(YuNetDetector.__init__).parameters
    return {_camel(name): parameters[name].default for name in _DETECTOR_SETTINGS}


@dataclass(frozen=True)
class WebDemoSite:
    """What the server serves.

    Attributes:
        root: The page's folder (``examples/web``), with ``node_modules`` installed.
        models: Model files by URL name (``int8`` is served as ``/models/int8.onnx``); the
            detector is under ``"detector"``, every other entry is a classifier.
        default: The classifier the page starts with.
    """

    root: Path
    models: dict[str, Path] = field(default_factory=dict)
    default: str = DEFAULT_MODEL

    @classmethod
    def create(
        cls, root: str | os.PathLike[str] | None = None, model: str | os.PathLike[str] | None = None
    ) -> WebDemoSite:
        """Check the page's folder and collect the bundled models (and ``model``, if given).

        Args:
            root: The page's folder; ``None`` uses :func:`default_web_root`.
            model: An extra classifier file (e.g. one made by ``fer-onnx model stamp``),
                served as ``custom`` and selected first.

        Raises:
            WebDemoError: The page, its npm packages or a model file is missing.
        """
        folder = default_web_root() if root is None else Path(root)
        if not (folder / "index.html").is_file():
            raise WebDemoError(
                f"the demo page is not at {folder}: it is part of the fer-onnx source "
                "repository, not of the installed package. Clone the repository and run "
                "`fer-onnx web` in it, or pass --root path/to/examples/web."
            )
        missing = [name for name in _REQUIRED if not (folder / name).is_file()]
        if missing:
            raise WebDemoError(
                f"{folder} lacks {', '.join(missing)}: run `npm ci` in {folder} "
                "(Node.js and npm needed) to install onnxruntime-web and OpenCV.js"
            )
        models = {"detector": bundled_yunet_path()}
        for name in BUNDLED_MODELS:
            try:
                models[name] = bundled_model_path(name)
            except ModelLoadError:
                continue
        default = bundled_model_path("default").stem
        if model is not None:
            path = Path(model)
            if not path.is_file():
                raise WebDemoError(f"--model {path}: no such file; pass an .onnx classifier")
            models["custom"] = path
            default = "custom"
        for path in models.values():
            if not path.is_file():
                raise WebDemoError(f"model file missing: {path}; reinstall fer-onnx")
        return cls(folder.resolve(), models, default)

    def config(self) -> dict[str, Any]:
        """The page's configuration (``/fer-onnx.json``)."""
        return {
            "detector": {"url": "models/detector.onnx", "options": detector_defaults()},
            "classifiers": [
                {"name": name, "url": f"models/{name}.onnx", "file": path.name}
                for name, path in self.models.items()
                if name != "detector"
            ],
            "default": self.default,
        }


class _Handler(SimpleHTTPRequestHandler):
    site: WebDemoSite

    def __init__(self, *args: Any, site: WebDemoSite, **kwargs: Any) -> None:
        self.site = site
        super().__init__(*args, directory=str(site.root), **kwargs)

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **_MIME}  # noqa: RUF012

    def end_headers(self) -> None:
        # Cross-origin isolation: SharedArrayBuffer, hence multi-threaded WebAssembly.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_GET(self) -> None:
        """Serve the configuration, a model file, or a file of the page."""
        path = unquote(urlsplit(self.path).path)
        if path == "/fer-onnx.json":
            self._send_bytes(json.dumps(self.site.config()).encode(), "application/json")
            return
        if path.startswith("/models/"):
            name = path.removeprefix("/models/").removesuffix(".onnx")
            model = self.site.models.get(name)
            if model is None or not path.endswith(".onnx"):
                self.send_error(HTTPStatus.NOT_FOUND, f"no model {name!r}")
                return
            self._send_bytes(model.read_bytes(), "application/octet-stream")
            return
        super().do_GET()

    def _send_bytes(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def make_server(
    site: WebDemoSite, host: str = "127.0.0.1", port: int = 8000
) -> ThreadingHTTPServer:
    """An HTTP server for ``site``, bound but not yet serving (``port=0`` picks a free port).

    Call ``serve_forever()`` (e.g. in a thread) and ``shutdown()`` / ``server_close()``.

    Raises:
        WebDemoError: The address cannot be bound (port in use, no permission).
    """
    try:
        return ThreadingHTTPServer((host, port), partial(_Handler, site=site))
    except OSError as e:
        raise WebDemoError(
            f"cannot listen on {host}:{port}: {e.strerror}; choose another --port"
        ) from e


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Start ``server.serve_forever`` in a daemon thread and return the thread."""
    thread = threading.Thread(target=server.serve_forever, name="fer-onnx-web", daemon=True)
    thread.start()
    return thread


def server_url(server: ThreadingHTTPServer) -> str:
    """The page's URL on ``server``."""
    host, port = server.server_address[:2]
    name = host.decode() if isinstance(host, bytes) else str(host)
    return f"http://{'localhost' if name in ('127.0.0.1', '') else name}:{port}/"


def _cmd_web(args: argparse.Namespace) -> int:
    site = WebDemoSite.create(args.root, args.model)
    server = make_server(site, args.host, args.port)
    print(f"fer-onnx web demo: {server_url(server)}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 130
    finally:
        server.server_close()
    return 0


def add_web_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fer-onnx web`` on the CLI's subparsers (``parser.add_subparsers()``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "web",
        help="serve the browser demo (onnxruntime-web) locally",
        description="Serve examples/web with the bundled models; open the printed URL. "
        "Run `npm ci` in examples/web once first.",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the page's folder (default: examples/web of the source checkout)",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="also serve this classifier (e.g. a stamped foreign model) and start with it",
    )
    p.set_defaults(func=_cmd_web)
    return p

"""``fer-onnx web``: serve the browser demo (``examples/web``) on a local HTTP server.

The page runs the bundled YuNet detector and expression classifier on onnxruntime-web. This
server hands it the very model files of the installed package (``/models/NAME.onnx``) and a
small configuration (``/fer-onnx.json``: the model URLs and :class:`~fer_onnx.yunet.
YuNetDetector`'s default settings, read from its signature so the two cannot drift apart).
Every response carries the cross-origin isolation headers that multi-threaded WebAssembly
needs. The page (HTML and JavaScript modules) ships in the wheel as ``fer_onnx.web_page``;
its npm packages (onnxruntime-web, OpenCV.js) are found or fetched as
:mod:`fer_onnx.web_runtime` says, and served under ``/node_modules/``. The command line
is :mod:`fer_onnx.cli.web`.
"""

from __future__ import annotations

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
from fer_onnx.recognizer import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    EmotionRecognizer,
    bundled_model_path,
)
from fer_onnx.web_runtime import WebDemoError, default_web_root, find_runtime
from fer_onnx.yunet import YuNetDetector, bundled_yunet_path

log = logging.getLogger(__name__)

__all__ = [
    "WebDemoError",
    "WebDemoSite",
    "default_web_root",
    "make_server",
]

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
        root: The page's folder (the installed ``fer_onnx.web_page``, or ``examples/web``).
        models: Model files by URL name (``int8`` is served as ``/models/int8.onnx``); the
            detector is under ``"detector"``, every other entry is a classifier.
        default: The classifier the page starts with.
        runtime: The folder whose ``node_modules`` (onnxruntime-web, OpenCV.js) is served
            under ``/node_modules/``; ``None`` serves ``root/node_modules``.
    """

    root: Path
    models: dict[str, Path] = field(default_factory=dict)
    default: str = DEFAULT_MODEL
    runtime: Path | None = None

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str] | None = None,
        model: str | os.PathLike[str] | None = None,
        runtime: str | os.PathLike[str] | None = None,
    ) -> WebDemoSite:
        """Check the page's folder and collect the bundled models (and ``model``, if given).

        Args:
            root: The page's folder; ``None`` uses :func:`default_web_root`.
            model: An extra classifier file (e.g. one made by ``fer-onnx model stamp``),
                served as ``custom`` and selected first.
            runtime: A folder holding ``node_modules``; ``None`` searches as
                :func:`~fer_onnx.web_runtime.find_runtime` says.

        Raises:
            WebDemoError: The page, its npm packages or a model file is missing.
        """
        folder = default_web_root() if root is None else Path(root)
        if not (folder / "index.html").is_file():
            raise WebDemoError(
                f"the demo page is not at {folder}: pass --root the folder holding index.html "
                "(examples/web of the fer-onnx source repository), or reinstall fer-onnx, whose "
                "wheel ships it"
            )
        node_modules = find_runtime(folder, runtime)
        models = {"detector": bundled_yunet_path()}
        for name in BUNDLED_MODELS:
            try:
                path = bundled_model_path(name)
            except ModelLoadError:
                continue
            if path not in models.values():  # "int8" is another name of "fast": list it once
                models[name] = path
        default_path = bundled_model_path("default")
        default = next(name for name, path in models.items() if path == default_path)
        if model is not None:
            path = Path(model)
            if not path.is_file():
                raise WebDemoError(f"--model {path}: no such file; pass an .onnx classifier")
            _check_classifier(path)
            models["custom"] = path
            default = "custom"
        for path in models.values():
            if not path.is_file():
                raise WebDemoError(f"model file missing: {path}; reinstall fer-onnx")
        return cls(folder.resolve(), models, default, node_modules.resolve())

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


def _check_classifier(path: Path) -> None:
    """Refuse a file the page could not run: not ONNX, or no classifier fer-onnx can use."""
    try:
        EmotionRecognizer(path, detector=None, device="cpu").close()
    except FerOnnxError as e:
        raise WebDemoError(
            f"--model {path}: expected an ONNX expression classifier with fer-onnx metadata "
            f"(labels, input size), and this is not one: {e}. A foreign classifier needs "
            "`fer-onnx model stamp` first."
        ) from e


class _Handler(SimpleHTTPRequestHandler):
    site: WebDemoSite

    def __init__(self, *args: Any, site: WebDemoSite, **kwargs: Any) -> None:
        self.site = site
        super().__init__(*args, directory=str(site.root), **kwargs)

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **_MIME}  # noqa: RUF012

    def translate_path(self, path: str) -> str:
        """A file of the page, or of the JavaScript runtime for ``/node_modules/...``."""
        local = super().translate_path(path)  # under root, ".." already dropped
        runtime = self.site.runtime
        relative = Path(os.path.relpath(local, self.directory))
        if runtime is not None and relative.parts[:1] == ("node_modules",):
            return str(runtime / relative)
        return local

    def end_headers(self) -> None:
        # Cross-origin isolation: SharedArrayBuffer, hence multi-threaded WebAssembly.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_GET(self) -> None:
        """Serve the configuration, a model file, or a file of the page."""
        self._serve(body=True)

    def do_HEAD(self) -> None:
        """The headers :meth:`do_GET` would send, without the body."""
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if "\x00" in path:
            self.send_error(HTTPStatus.BAD_REQUEST, "a NUL byte in the path")
            return
        if path == "/fer-onnx.json":
            self._send_bytes(json.dumps(self.site.config()).encode(), "application/json", body)
            return
        if path.startswith("/models/"):
            self._send_model(path, body)
            return
        try:
            if body:
                super().do_GET()
            else:
                super().do_HEAD()
        except ValueError:  # a path the file system cannot take (bad UTF-8, ...)
            self.send_error(HTTPStatus.BAD_REQUEST, "a path that names no file")

    def _send_model(self, path: str, body: bool) -> None:
        name = path.removeprefix("/models/").removesuffix(".onnx")
        model = self.site.models.get(name)
        if model is None or not path.endswith(".onnx"):
            self.send_error(HTTPStatus.NOT_FOUND, f"no model {name!r}")
            return
        try:
            data = model.read_bytes()
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, f"model {name!r} is no longer there")
            return
        self._send_bytes(data, "application/octet-stream", body)

    def _send_bytes(self, data: bytes, content_type: str, body: bool = True) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def make_server(
    site: WebDemoSite, host: str = "127.0.0.1", port: int = 8000
) -> ThreadingHTTPServer:
    """An HTTP server for ``site``, bound but not yet serving (``port=0`` picks a free port).

    Call ``serve_forever()`` (e.g. in a thread) and ``shutdown()`` / ``server_close()``.

    Raises:
        WebDemoError: The port is not 0..65535, or the address cannot be bound (port in use,
            no permission, unknown host).
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise WebDemoError(f"expected a port number 0..65535 (0 = any free), got {port!r}")
    try:
        return ThreadingHTTPServer((host, port), partial(_Handler, site=site))
    except (OSError, OverflowError) as e:
        raise WebDemoError(
            f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}; "
            "choose another --port or --host"
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

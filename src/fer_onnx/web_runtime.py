"""Where ``fer-onnx web`` finds the demo page and the JavaScript runtime the page needs.

The page (``index.html``, ``style.css``, ``js/``, and the ``package.json`` /
``package-lock.json`` that pin its npm packages) has one copy, ``examples/web`` of the
repository; the wheel ships it as the data package ``fer_onnx.web_page``. Its npm packages
(onnxruntime-web and OpenCV.js, ``node_modules``) are not in the wheel. They are found in, in
this order:

1. the folder given as ``--runtime`` (a folder holding ``node_modules``, or ``node_modules``
   itself) or the ``FER_ONNX_WEB_RUNTIME`` environment variable;
2. the page's own folder (a source checkout after ``npm ci`` in ``examples/web``);
3. the cache that ``fer-onnx web --fetch-runtime`` fills with ``npm ci`` (needs Node.js and
   npm): ``$XDG_CACHE_HOME/fer-onnx/web-runtime-<lockfile digest>`` (``~/.cache`` when unset),
   one folder per version of the lockfile.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from fer_onnx.errors import FerOnnxError

__all__ = [
    "RUNTIME_ENV",
    "RUNTIME_FILES",
    "WebDemoError",
    "default_web_root",
    "fetch_runtime",
    "find_runtime",
    "runtime_cache",
]

RUNTIME_FILES = (
    "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",
    "node_modules/@techstark/opencv-js/dist/opencv.js",
)
"""Files of the page's npm packages that must exist under a runtime folder."""

RUNTIME_ENV = "FER_ONNX_WEB_RUNTIME"
"""An environment variable naming a runtime folder (like ``--runtime``)."""

_LOCK_FILES = ("package.json", "package-lock.json")


class WebDemoError(FerOnnxError):
    """The browser demo cannot be served (page or its npm packages missing, bad model)."""


def default_web_root() -> Path:
    """The page's folder: the installed ``fer_onnx.web_page``, else a checkout's ``examples/web``.

    The checkout is the one this module lies in (run from ``src/``), then the current
    directory's; the last candidate when none has the page.
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec("fer_onnx.web_page")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) for p in spec.submodule_search_locations)
    candidates += [
        Path(__file__).resolve().parents[2] / "examples" / "web",
        Path.cwd() / "examples" / "web",
    ]
    for folder in candidates:
        if (folder / "index.html").is_file():
            return folder
    return candidates[-1]


def _cache_home() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME")
    return Path(cache) if cache else Path.home() / ".cache"


def runtime_cache(page: str | os.PathLike[str]) -> Path:
    """Where ``--fetch-runtime`` installs the npm packages of ``page`` (by its lockfile)."""
    lock = Path(page) / "package-lock.json"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12] if lock.is_file() else "unpinned"
    return _cache_home() / "fer-onnx" / f"web-runtime-{digest}"


def _as_runtime(folder: Path) -> Path:
    """``folder``, or its parent when it is the ``node_modules`` folder itself."""
    return folder.parent if folder.name == "node_modules" else folder


def _missing(folder: Path) -> list[str]:
    return [name for name in RUNTIME_FILES if not (folder / name).is_file()]


def find_runtime(
    page: str | os.PathLike[str], runtime: str | os.PathLike[str] | None = None
) -> Path:
    """The folder whose ``node_modules`` holds onnxruntime-web and OpenCV.js for ``page``.

    Args:
        page: The page's folder.
        runtime: A folder holding ``node_modules`` (or ``node_modules`` itself); when given,
            only it is checked.

    Raises:
        WebDemoError: No candidate has the packages; says where it looked and how to get them.
    """
    if runtime is not None:
        folder = _as_runtime(Path(runtime))
        missing = _missing(folder)
        if missing:
            raise WebDemoError(
                f"--runtime {runtime}: expected a folder holding node_modules with "
                f"onnxruntime-web and OpenCV.js, and it lacks {', '.join(missing)}. Run "
                f"`fer-onnx web --fetch-runtime --runtime {runtime}` (npm needed) to fill it."
            )
        return folder
    candidates = [Path(os.environ[RUNTIME_ENV])] if os.environ.get(RUNTIME_ENV) else []
    candidates += [Path(page), runtime_cache(page)]
    for folder in map(_as_runtime, candidates):
        if not _missing(folder):
            return folder
    looked = ", ".join(str(folder) for folder in candidates)
    raise WebDemoError(
        "the demo page needs its JavaScript runtime (the npm packages onnxruntime-web and "
        f"OpenCV.js), and none was found (looked in {looked}). Run `fer-onnx web "
        "--fetch-runtime` once (needs Node.js and npm: it runs npm ci into the cache), or "
        f"`npm ci` in {page} of a source checkout, or pass --runtime FOLDER (a folder "
        "holding node_modules)."
    )


def fetch_runtime(
    page: str | os.PathLike[str],
    destination: str | os.PathLike[str] | None = None,
    npm: str | None = None,
    timeout: float = 900.0,
) -> Path:
    """Install the page's npm packages, as pinned by its lockfile, with ``npm ci``.

    Args:
        page: The page's folder (its ``package.json`` and ``package-lock.json`` are used).
        destination: Where ``node_modules`` goes; default :func:`runtime_cache`.
        npm: The npm executable; default the one on ``PATH``.
        timeout: Seconds ``npm ci`` may take.

    Returns:
        The runtime folder, ready for :func:`find_runtime`.

    Raises:
        WebDemoError: npm is missing, the page lacks its lockfile, or ``npm ci`` failed.
    """
    folder = Path(page)
    target = runtime_cache(folder) if destination is None else _as_runtime(Path(destination))
    executable = npm or shutil.which("npm")
    if executable is None:
        raise WebDemoError(
            "--fetch-runtime needs npm (it comes with Node.js: e.g. apt-get install npm, or "
            "nodejs.org); or copy a node_modules with onnxruntime-web and @techstark/opencv-js "
            "somewhere and pass --runtime FOLDER"
        )
    for name in _LOCK_FILES:
        if not (folder / name).is_file():
            raise WebDemoError(f"the page at {folder} lacks {name}; reinstall fer-onnx")
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in _LOCK_FILES:
            shutil.copyfile(folder / name, target / name)
    except OSError as e:
        raise WebDemoError(f"cannot prepare {target} for npm: {e}") from e
    command = [executable, "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        done = subprocess.run(
            command, cwd=target, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise WebDemoError(f"`npm ci` in {target} did not finish: {e}") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise WebDemoError(f"`npm ci` in {target} failed (exit {done.returncode}): {tail}")
    missing = _missing(target)
    if missing:
        raise WebDemoError(f"`npm ci` in {target} finished, but {', '.join(missing)} is missing")
    return target

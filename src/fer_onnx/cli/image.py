"""``fer-onnx image``: each face (box, label, score) of each image, as a table or JSON.

    fer-onnx image photo.jpg [more.jpg ...] [--json] [--out DIR]

Exit codes: 0 every image read; 1 some image failed (the others are reported; with
``--json`` each input has an entry: ``{"file", "faces", "error"}``, ``faces`` ``null`` and
``error`` the message for an image that could not be read).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from fer_onnx.batch import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from fer_onnx.cli.console import emit
from fer_onnx.cli.options import add_model_options, path_argument, recognizer
from fer_onnx.draw import draw_faces
from fer_onnx.errors import FerOnnxError, OutputError
from fer_onnx.images import load_image
from fer_onnx.outputs import AtomicOutput, deferred_signals

__all__ = ["add_image_parser"]


def _annotated_name(path: Path, out: Path, taken: set[Path]) -> Path:
    """A new file in ``out`` for ``path``'s annotated copy: never an existing file, never twice.

    ``photo.jpg`` becomes ``photo_fer.jpg``; a suffix OpenCV cannot write (``.bak``) becomes
    ``.png``; a name already used (same stem in another folder, or a file already there) gets
    ``-2``, ``-3``, ...
    """
    suffix = path.suffix.lower()
    if not suffix or not cv2.haveImageWriter(f"x{suffix}"):
        suffix = ".png"
    stem = f"{path.stem if path.suffix.lower() == suffix else path.name}_fer"
    target = out / f"{stem}{suffix}"
    n = 2
    while target in taken or target.exists() or target.is_symlink():
        target = out / f"{stem}-{n}{suffix}"
        n += 1
    taken.add(target)
    return target


def _not_an_image_hint(path: Path) -> str:
    """Where to turn when ``path`` is a folder or a video rather than a photo."""
    if path.is_dir():
        return (
            f"; for every photo and video in a folder use "
            f"`fer-onnx batch {shlex.quote(str(path))} --out faces.parquet`"
        )
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return f"; for a video use `fer-onnx video {shlex.quote(str(path))} --csv faces.csv`"
    return ""


class _Table:
    """The image command's table, file column as wide as the longest name.

    The header comes before the first row: a run without rows prints none.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.width = max([len("file"), *(len(str(p)) for p in paths)])
        self.started = False

    def rows(self, path: Path, faces: Sequence[Any]) -> None:
        w = self.width
        if not self.started:
            self.started = True
            emit(
                f"{'file':<{w}} {'face':>4} {'x':>5} {'y':>5} {'w':>5} {'h':>5}  {'label':<9} score"
            )
        if not faces:
            emit(f"{path!s:<{w}} {'-':>4}  no face found")
        for i, f in enumerate(faces):
            b = f.box
            emit(
                f"{path!s:<{w}} {i:>4} {b.x:>5} {b.y:>5} {b.width:>5} {b.height:>5}  "
                f"{f.label:<9} {f.score:.3f}"
            )


def _write_annotated(path: Path, faces: Sequence[Any], target: Path) -> None:
    ok, data = cv2.imencode(target.suffix, draw_faces(load_image(path), faces))
    if not ok:
        raise OutputError(f"cannot encode {target.suffix} images")
    with contextlib.ExitStack() as stack:
        with deferred_signals():
            output = stack.enter_context(AtomicOutput(target))
        output.tmp.write_bytes(data.tobytes())
        output.commit()


def _out_folder(out: Path | None) -> None:
    """Check ``--out`` (a folder for annotated copies) and create it; refuse what is not one."""
    if out is None:
        return
    if str(out) == "-":
        raise OutputError(
            "--out takes a folder for annotated copies; '-' (standard output) does not apply "
            "here: use --json to print the results"
        )
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: expected a folder, and it is a file")
    if not out.exists() and out.suffix.lower() in IMAGE_EXTENSIONS:
        raise OutputError(
            f"--out {out}: expected a folder, and this looks like an image file name; give a "
            f"folder (each annotated copy is written into it as <photo>_fer.<ext>)"
        )
    out.mkdir(parents=True, exist_ok=True)


def _cmd_image(args: argparse.Namespace) -> int:
    _out_folder(args.out)
    failed = 0
    report: list[dict[str, Any]] = []
    taken: set[Path] = set()
    table = _Table(args.paths)
    with recognizer(args) as rec:
        for path in args.paths:
            try:
                faces = rec.recognize(path)
            except FerOnnxError as e:
                named = "" if str(path) in str(e) else f"{path}: "  # the message may name it
                print(f"error: {named}{e}{_not_an_image_hint(path)}", file=sys.stderr)
                report.append({"file": str(path), "faces": None, "error": str(e)})
                failed += 1
                continue
            entry: dict[str, Any] = {
                "file": str(path),
                "faces": [f.to_dict() for f in faces],
                "error": None,
            }
            report.append(entry)
            if not args.json:
                table.rows(path, faces)
            if args.out is not None:
                target = _annotated_name(path, args.out, taken)
                try:
                    _write_annotated(path, faces, target)
                except (FerOnnxError, cv2.error, OSError) as e:
                    print(f"error: {path}: annotated copy not written: {e}", file=sys.stderr)
                    entry["error"] = f"annotated copy not written: {e}"
                    failed += 1
                    continue
                print(f"wrote {target}", file=sys.stderr)
    if args.json:
        emit(json.dumps(report, indent=2))
    return 1 if failed else 0


def add_image_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fer-onnx image`` on the CLI's subparsers (from ``add_subparsers``).

    Args:
        subparsers: The top-level parser's sub-command action.

    Returns:
        The sub-command's parser; its ``args.func(args)`` returns the exit code.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "image",
        help="faces and expressions in images",
        description="Print each face (box, label, score) of each image.",
    )
    p.add_argument("paths", nargs="+", type=path_argument, help="image files")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", type=path_argument, default=None, help="folder for annotated copies")
    add_model_options(p)
    p.set_defaults(func=_cmd_image)
    return p

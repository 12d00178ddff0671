"""Finding a batch job's inputs: paths, folders, glob patterns and lists of paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fer_onnx.batch.errors import BatchError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FoundInputs",
    "absolute",
    "find_inputs",
    "kind_of",
]

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff",
        ".jp2", ".pbm", ".pgm", ".ppm", ".pnm", ".gif", ".avif", ".heic", ".heif",
    }
)  # fmt: skip
"""Names a folder search takes as photos (lower case). Named files are read whatever their name."""
VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
        ".3gp", ".ts", ".mts", ".m2ts", ".ogv",
    }
)  # fmt: skip
"""Names read as videos (lower case); every other file is read as a photo."""


@dataclass(frozen=True, slots=True)
class FoundInputs:
    """The files a batch job reads, from :func:`find_inputs`.

    Attributes:
        paths: Absolute paths of the files, in the order found, without duplicates.
        missing: ``(name, message)`` for each named path or pattern that matched nothing.
        ignored: Files inside searched folders whose names are neither photos nor videos.
        named: The subset of ``paths`` named directly (not found in a folder or by a pattern).
    """

    paths: tuple[str, ...]
    missing: tuple[tuple[str, str], ...] = ()
    ignored: int = 0
    named: frozenset[str] = field(default_factory=frozenset)


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` with ``~`` expanded, made absolute (workers may run in another folder)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def kind_of(path: str) -> str:
    """``"video"`` for a name in :data:`VIDEO_EXTENSIONS`, else ``"image"``."""
    return "video" if Path(path).suffix.lower() in VIDEO_EXTENSIONS else "image"


def _hidden(name: str) -> bool:
    return name.startswith(".")


def find_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    files_from: Iterable[str | os.PathLike[str]] = (),
    *,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> FoundInputs:
    """Expand paths, folders, globs and lists of paths into the files to read.

    * A folder is searched recursively, in sorted order, for files named like photos
      (:data:`IMAGE_EXTENSIONS`) or videos (:data:`VIDEO_EXTENSIONS`); hidden files and
      folders (names starting with ``.``) are passed over, other files are counted in
      ``ignored``.
    * A named file is read whatever its name (one that is not an image ends up as an error).
    * A name that does not exist but contains ``*``, ``?`` or ``[`` is a glob pattern
      (``**`` matches any depth); its matches are treated like named paths.
    * Each line of a ``files_from`` file is one path, folder or pattern; blank lines and lines
      starting with ``#`` are skipped; relative paths are relative to the list's folder.

    Args:
        inputs: Files, folders and patterns.
        files_from: Text files listing more of them, one per line.
        exclude: Paths never taken from folders or patterns (a job's own outputs).

    Returns:
        The files, without duplicates, as absolute paths; names that matched nothing.

    Raises:
        BatchError: A ``files_from`` list cannot be read.
    """
    excluded = {absolute(p) for p in exclude}
    paths: dict[str, None] = {}
    named: set[str] = set()
    missing: list[tuple[str, str]] = []
    ignored: set[str] = set()

    def walk(folder: str) -> None:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(
                d for d in dirs if not _hidden(d) and os.path.join(root, d) not in excluded
            )
            for name in sorted(files):
                path = os.path.join(root, name)
                if _hidden(name) or path in excluded:
                    continue
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
                    paths.setdefault(path)
                else:
                    ignored.add(path)

    def expand(item: str, base: str | None = None) -> None:
        given = os.path.expanduser(item)
        if base is not None and not os.path.isabs(given):
            given = os.path.join(base, given)
        path = os.path.abspath(given)
        if os.path.isdir(path):
            walk(path)
        elif os.path.lexists(path):
            paths.setdefault(path)
            named.add(path)
        elif glob.has_magic(given):
            matches = sorted(glob.glob(given, recursive=True))
            if not matches:
                missing.append((item, "no file or folder matches this pattern"))
            for match in matches:
                full = os.path.abspath(match)
                if os.path.isdir(full):
                    if full not in excluded:
                        walk(full)
                elif full not in excluded and not _hidden(os.path.basename(full)):
                    paths.setdefault(full)
        else:
            missing.append((item, "no such file or folder"))

    for item in inputs:
        expand(os.fspath(item))
    for listing in files_from:
        list_path = absolute(listing)
        try:
            with open(list_path, encoding="utf-8") as stream:
                lines = stream.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise BatchError(
                f"cannot read the list of paths {os.fspath(listing)!r}: {e}; expected a UTF-8 "
                "text file with one path, folder or pattern per line"
            ) from e
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                expand(entry, base=os.path.dirname(list_path))
    for path in list(paths):
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # os.walk gives undecodable bytes as surrogates
            del paths[path]
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            missing.append(
                (
                    shown,
                    "the file name is not valid UTF-8 and cannot be stored in the "
                    "result tables; rename the file",
                )
            )
    missing_unique = list(dict.fromkeys(missing))
    others = len(ignored.difference(paths))  # a file named directly is not ignored
    return FoundInputs(tuple(paths), tuple(missing_unique), others, frozenset(named))

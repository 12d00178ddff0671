"""Finding a batch job's inputs: paths, folders, glob patterns and lists of paths."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fer_onnx.batch.errors import BatchError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FoundInputs",
    "absolute",
    "find_inputs",
    "glob_paths",
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
    found = _Collector({absolute(p) for p in exclude})
    for item in inputs:
        found.expand(os.fspath(item))
    for listing in files_from:
        list_path = absolute(listing)
        for entry in _listed(listing, list_path):
            found.expand(entry, base=os.path.dirname(list_path))
    found.drop_undecodable()
    others = len(found.ignored.difference(found.paths))  # a file named directly is not ignored
    return FoundInputs(
        tuple(found.paths), tuple(dict.fromkeys(found.missing)), others, frozenset(found.named)
    )


def _listed(listing: str | os.PathLike[str], list_path: str) -> list[str]:
    """The entries of a ``files_from`` list: its lines, less blank ones and ``#`` comments.

    Raises:
        BatchError: The list cannot be read as UTF-8 text.
    """
    try:
        with open(list_path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BatchError(
            f"cannot read the list of paths {os.fspath(listing)!r}: {e}; expected a UTF-8 "
            "text file with one path, folder or pattern per line"
        ) from e
    return [
        entry for entry in (line.strip() for line in lines) if entry and not entry.startswith("#")
    ]


def _is_link_to_folder(path: str) -> bool:
    return os.path.islink(path) and os.path.isdir(path)


def _entries(folder: str, pattern: str) -> list[tuple[str, bool]]:
    """``(path, is_real_folder)`` of the names in ``folder`` that ``pattern`` matches.

    Hidden names match only a pattern that starts with ``.`` (as in :func:`glob.glob`). A
    symbolic link to a folder is passed over, as :meth:`_Collector.walk` passes it over.
    """
    try:
        with os.scandir(folder or os.curdir) as scan:
            found = [
                (os.path.join(folder, e.name), e.is_dir(follow_symlinks=False))
                for e in scan
                if fnmatch.fnmatch(e.name, pattern)
                and (pattern.startswith(".") or not _hidden(e.name))
            ]
    except OSError:  # not a folder, unreadable: no match, as glob.glob says
        return []
    return [(path, real) for path, real in found if real or not _is_link_to_folder(path)]


def _below(
    folder: str, excluded: set[str] | frozenset[str] = frozenset()
) -> Iterator[tuple[str, bool]]:
    """``(path, is_real_folder)`` of everything under ``folder``, top down, in sorted order.

    The folder search's rule, for the walk and for ``**`` alike: hidden names and ``excluded``
    paths are passed over, and symbolic links to folders are neither entered nor listed (a
    link loop cannot multiply the inputs).
    """
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(
            d
            for d in dirs
            if not _hidden(d)
            and os.path.join(root, d) not in excluded
            and not os.path.islink(os.path.join(root, d))
        )
        yield from ((os.path.join(root, d), True) for d in dirs)
        for name in sorted(files):
            path = os.path.join(root, name)
            if not _hidden(name) and path not in excluded:
                yield path, False


def _expand(folder: str, parts: list[str]) -> Iterator[str]:
    """What the pattern components ``parts`` match in ``folder`` (which exists or not)."""
    if not parts:
        yield folder
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        while rest and rest[0] == "**":
            rest = rest[1:]
        if not rest:  # the folder itself, and everything below it
            if os.path.isdir(folder):
                yield folder
            yield from (path for path, _ in _below(folder))
            return
        for inner in [folder, *(path for path, real in _below(folder) if real)]:
            yield from _expand(inner, rest)
    elif head == "":  # a trailing separator: folders only
        if os.path.isdir(folder):
            yield folder
    elif not glob.has_magic(head):  # a name written out is followed, link or not
        path = os.path.join(folder, head)
        if rest or os.path.lexists(path):
            yield from _expand(path, rest)
    else:
        for path, real in _entries(folder, head):
            if not rest:
                yield path
            elif real:
                yield from _expand(path, rest)


def glob_paths(pattern: str) -> list[str]:
    """The paths a glob ``pattern`` matches (``**`` for any depth), as a folder walk finds them.

    Like ``glob.glob(pattern, recursive=True)`` (hidden names match only a pattern starting
    with ``.``), except that wildcards never pass through a symbolic link to a folder, nor
    match one, as :meth:`_Collector.walk` neither enters nor lists them: a link loop
    (``sub/loop -> ..``) cannot match the same file again under ever longer names. Parts of
    the pattern without wildcards are followed like any path (``photos_link/**/*.jpg``
    searches the folder the link points to). A symbolic link to a file, broken or not, is
    matched like a file.

    Returns:
        Absolute paths, each once (relative patterns are relative to the working folder).
    """
    if os.altsep:
        pattern = pattern.replace(os.altsep, os.sep)
    pattern = os.path.join(os.getcwd(), pattern)  # an absolute pattern stays as it is
    drive, rest = os.path.splitdrive(pattern)
    parts = rest.split(os.sep)[1:]  # the first is "" (before the root)
    parts = [p for p in parts[:-1] if p] + parts[-1:]  # a//b is a/b; a trailing / stays
    return list(dict.fromkeys(_expand(drive + os.sep, parts)))


class _Collector:
    """What :func:`find_inputs` has found so far: files in order, and what it passed over."""

    def __init__(self, excluded: set[str]) -> None:
        self.excluded = excluded
        self.paths: dict[str, None] = {}
        self.named: set[str] = set()
        self.missing: list[tuple[str, str]] = []
        self.ignored: set[str] = set()

    def walk(self, folder: str) -> None:
        """Every photo or video under ``folder``, in sorted order, hidden names passed over."""
        for path, is_folder in _below(folder, self.excluded):
            if is_folder:
                continue
            if Path(path).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
                self.paths.setdefault(path)
            else:
                self.ignored.add(path)

    def expand(self, item: str, base: str | None = None) -> None:
        """One path, folder or pattern (relative to ``base`` when given)."""
        given = os.path.expanduser(item)
        if base is not None and not os.path.isabs(given):
            given = os.path.join(base, given)
        path = os.path.abspath(given)
        if os.path.isdir(path):
            self.walk(path)
        elif os.path.lexists(path):
            self.paths.setdefault(path)
            self.named.add(path)
        elif glob.has_magic(given):
            self.matches(item, given)
        else:
            self.missing.append((item, "no such file or folder"))

    def matches(self, item: str, pattern: str) -> None:
        """The files and folders a glob ``pattern`` matches, taken like named paths."""
        matches = sorted(glob_paths(pattern))
        if not matches:
            self.missing.append((item, "no file or folder matches this pattern"))
        for match in matches:
            full = os.path.abspath(match)
            if full in self.excluded:
                continue
            if os.path.isdir(full):
                self.walk(full)
            elif not _hidden(os.path.basename(full)):
                self.paths.setdefault(full)

    def drop_undecodable(self) -> None:
        """Move names that are not valid UTF-8 (they cannot be stored) to ``missing``."""
        for path in list(self.paths):
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:  # os.walk gives undecodable bytes as surrogates
                del self.paths[path]
                shown = os.fsencode(path).decode("utf-8", "backslashreplace")
                self.missing.append(
                    (
                        shown,
                        "the file name is not valid UTF-8 and cannot be stored in the "
                        "result tables; rename the file",
                    )
                )

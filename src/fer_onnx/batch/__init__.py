"""Batch inference over collections of photos and videos: resumable, on all cores or on Ray.

:func:`run` finds the files (folders searched recursively, globs expanded, lists of paths read),
recognises every face of every photo and of every ``every``-th frame of every video, and writes
three tables side by side, in Parquet (``.parquet``, needs pyarrow) or CSV (``.csv``), by the
extension of ``out``:

* ``faces.parquet``, one row per face, the row of :mod:`fer_onnx.rows` that the video sinks
  write too: ``source`` (the absolute path), ``frame``, ``timestamp`` (seconds) and
  ``track_id`` for videos (empty for photos), ``face`` (its index in the photo or frame), the
  box ``x, y, width, height`` in pixels, ``detection_score``, ``label``, ``score`` and one
  ``p_<label>`` column per class of the model, unrounded;
* ``faces.errors.parquet``: ``path, error_type, message`` for every input that could not be read;
* ``faces.files.parquet``: one row per input: ``path, kind, size, mtime_ns, status`` (``ok`` or
  ``error``), ``faces``, ``frames`` and ``corrupt_frames`` (videos), ``error_type, message``.
  ``corrupt_frames`` counts the frames of a video that were not analysed: those that failed to
  decode, and those its container announced after the stream ended (a truncated file; a short
  shortfall that looks like an estimated length is not counted). Such a video is ``ok`` with
  what could be read, and its ``message`` says what was not analysed, as ``fer-onnx video``
  says it.

Integer columns are int64; in the Parquet tables the nullable ones (``frame`` and ``track_id``,
empty for photos; the files table's counts) are marked for pandas' ``Int64``, so that
``pandas.read_parquet`` keeps them integers.

Every input ends up in the files table as ``ok`` or ``error``; nothing is dropped silently.

**Resuming.** While the run goes on, each finished file is appended to a journal in
``faces.parquet.parts/``; at the end the journal is merged with what the tables already held,
and the tables are written to temporary files and renamed into place. An interrupted run
(Ctrl-C, SIGTERM, a crash, SIGKILL) loses at most the files that were being read. Running the
same command again skips every file already done whose size and modification time are
unchanged (and, unless ``retry_errors``, the files that failed), processes the rest and merges
old and new results; a file that changed is read again and its old rows are replaced. Nothing
the user had is overwritten: an existing ``out`` that this module did not write is refused.

**Engines.** ``"local"`` (the default) runs a pool of processes, one per core, each holding one
recognizer with one onnxruntime thread, and hands files out in chunks (each video alone, first).
``"ray"`` runs the same work on a Ray cluster (:mod:`fer_onnx.batch.ray_engine`; the optional
extra ``pip install "fer-onnx[ray]"``). Both send each finished file back to this process, which
keeps the journal. The local workers are started with ``spawn`` and import the caller's main
module: in a script, call :func:`run` under ``if __name__ == "__main__":``.

The package, one idea per module (each imports only those listed before it):
:mod:`~fer_onnx.batch.errors` (the errors), :mod:`~fer_onnx.batch.inputs` (finding files),
:mod:`~fer_onnx.batch.tables` (where the tables go, their columns, reading and writing),
:mod:`~fer_onnx.batch.journal` (the journal and the merge), :mod:`~fer_onnx.batch.lock`,
:mod:`~fer_onnx.batch.worker` (reading one file), :mod:`~fer_onnx.batch.local` and
:mod:`~fer_onnx.batch.ray_engine` (the engines), :mod:`~fer_onnx.batch.runner` (:func:`run`).

Example:
    >>> from fer_onnx.batch import run
    >>> summary = run(["photos/", "clips/*.mp4"], "faces.parquet")  # doctest: +SKIP
    >>> summary.describe()                                         # doctest: +SKIP
    '2004 inputs: 2000 read, 4 errors, 0 done before; all accounted for. ...'
"""

from fer_onnx.batch.errors import BatchError, BatchTypeError, MissingDependencyError
from fer_onnx.batch.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, FoundInputs, find_inputs
from fer_onnx.batch.ray_engine import RayOptions
from fer_onnx.batch.runner import BatchProgress, BatchSummary, Engine, run
from fer_onnx.batch.tables import ERROR_COLUMNS, FILE_COLUMNS, ROW_COLUMNS, output_paths
from fer_onnx.batch.worker import DETECTOR_OPTIONS

__all__ = [
    "DETECTOR_OPTIONS",
    "ERROR_COLUMNS",
    "FILE_COLUMNS",
    "IMAGE_EXTENSIONS",
    "ROW_COLUMNS",
    "VIDEO_EXTENSIONS",
    "BatchError",
    "BatchProgress",
    "BatchSummary",
    "BatchTypeError",
    "Engine",
    "FoundInputs",
    "MissingDependencyError",
    "RayOptions",
    "find_inputs",
    "output_paths",
    "run",
]

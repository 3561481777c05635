"""What every command-line entry point does around its work (`python -m kphases`, `python -m reproduce.*`).

A refusal is one line on stderr, whatever printed it:
- flag errors of `tyro` (an unknown choice, a config value out of range) come as a framed box of
  several lines; `parse_flags` turns the box into one `error: ...` line (exit status 2);
- TensorFlow's C++ start-up notices (the absl "before absl::InitializeLog()" warning, oneDNN,
  cpu_feature_guard, and on machines without a GPU "Could not find cuda drivers" and "failed call
  to cuInit ... (303)") are written straight to file descriptor 2 before TensorFlow reads
  TF_CPP_MIN_LOG_LEVEL, so no environment variable silences them. `start_tensorflow` imports
  TensorFlow with descriptor 2 redirected to a temporary file and passes on every captured line
  except those notices. Where a GPU is asked for (`kphases train --devices GPU:0`,
  `reproduce.all --gpus-per-task`) nothing is filtered: a failed cuInit then explains the error
  that follows. TF_CPP_MIN_LOG_LEVEL=0 in the environment also shows them.

Ctrl-C (SIGINT) ends a command with one line saying which run stopped where and that the same
command resumes it (`interrupted`), exit status 130 (128 + SIGINT, the shell's convention);
KPHASES_DEBUG=1 shows the traceback instead, as it does for every refusal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from types import TracebackType

import tyro

from kphases.store import Run, StoreError

INTERRUPTED_STATUS = 130

# TensorFlow's start-up notices that say nothing about the command's own work (module docstring).
START_UP_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|\] oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc:\d+\]"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$"
    r"|\] Could not find cuda drivers on your machine"
    r"|\] failed call to cuInit"
    r"|\] Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning: Could not find TensorRT"
)


def configure_environment() -> None:
    """Defaults every entry point sets before anything imports keras or TensorFlow (a user's own value wins)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log after start-up: warnings and errors reach Python anyway


class _RetracingAdvice(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls to <function> triggered tf.function retracing" warning.

    The suite traces one function per model on purpose (`kphases.training`: a network's inference and
    update functions are traced once and reused across its batches and snapshots), and one process
    builds many models (a figure's runs, the calibration's networks), so the count TensorFlow keeps per
    Python function passes its threshold while each function traces only for the input shapes it is
    given; the advice it prints (define the function outside the loop) names a fault that is not there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def start_tensorflow(gpu_requested: bool = False) -> None:
    """Import TensorFlow and list its devices (where cuInit runs), without its start-up notices unless a GPU is
    asked for, and without its retracing advice (`_RetracingAdvice`)."""
    if "tensorflow" in sys.modules:
        return
    logging.getLogger("tensorflow").addFilter(_RetracingAdvice())
    if gpu_requested or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow as tf

        tf.config.list_physical_devices()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not START_UP_NOTICES.search(line.rstrip("\n"))))
            sys.stderr.flush()


# --- flags ------------------------------------------------------------------------------------------

_BOX_DRAWING = re.compile(r"[\u2500-\u257f]")
_ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def parse_flags(target, **tyro_options):
    """`tyro.cli(target, **tyro_options)`, with a flag error as one line `error: <what tyro said>` (exit status 2)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(target, **tyro_options)
    except SystemExit as exit_request:
        if exit_request.code not in (0, None):
            print(f"error: {one_line(captured.getvalue())}", file=sys.stderr)
            raise SystemExit(2) from None
        sys.stderr.write(captured.getvalue())
        raise


def one_line(framed: str) -> str:
    """tyro's framed error box as one line: its message, without the frame, the title ("Value error") and the --help pointer."""
    plain = _ANSI_STYLE.sub("", _BOX_DRAWING.sub(" ", framed))  # styled where stdout is a terminal
    lines = [line.strip() for line in plain.splitlines()]
    lines = [line for line in lines if line and set(line) != {"-"}]  # the ASCII frame's rules
    text = " ".join(" ".join(lines[1:] if len(lines) > 1 else lines).split())
    return text.partition("For full helptext")[0].strip()


# --- Ctrl-C -----------------------------------------------------------------------------------------


def interrupted(error: KeyboardInterrupt, during: str = "") -> int:
    """Print the one line of an interrupted command and return its exit status (130).

    The run is the innermost one the interrupted code was working on, read off the traceback's
    frames: the interrupt lands anywhere (a training step, a decoder fit, a file write), and every
    layer that trains or measures holds its `Run` in a local variable.
    """
    if os.environ.get("KPHASES_DEBUG"):
        raise error
    run = _run_in_frames(error.__traceback__)
    where = f" during {during}" if during else ""
    if run is None:
        line = f"interrupted{where}; the runs and measurements finished before are stored: run the same command again to resume"
    else:
        line = f"interrupted{where}: {_run_state(run)}"
    print(line, file=sys.stderr, flush=True)
    return INTERRUPTED_STATUS


def _run_in_frames(traceback: TracebackType | None):
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, Run):
                return value
    return None


def _run_state(run) -> str:
    """Where `run` stands on disk: its last snapshot and resume step while training, else that it is being measured."""
    try:
        manifest = run.manifest()
        state = run.checkpoint_state() if not manifest.get("complete") else None
    except (StoreError, OSError, ValueError) as error:
        return f"run {run.directory} stopped ({error}); run the same command again to resume"
    if manifest.get("complete"):
        return (
            f"run {run.directory} is trained; its measurement stopped, the cells measured so far are stored: "
            "run the same command again to measure the rest"
        )
    steps = sorted(int(step) for step in manifest.get("snapshots", {}))
    of_last = f" of {manifest['last_iteration']}" if "last_iteration" in manifest else ""
    snapshot = f"last snapshot at step {steps[-1]}" if steps else "no snapshot yet"
    resume = state["step"] if state else (steps[0] if steps else 0)
    return (
        f"training of run {run.directory} stopped ({snapshot}, resume state at step {resume}{of_last}): "
        f"run the same command again to resume from step {resume}"
    )

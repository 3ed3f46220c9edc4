"""The ``obsv`` command's standard streams: the answer on stdout, messages on stderr.

Whatever the shell or the image did with them (a reader gone, a full disk, a closed
descriptor, ``python -u``, a non-UTF-8 locale), a command ends with the exit code of its
answer (docs/reference.md §1): a reader that left (``| head``) ends it quietly with
141; an answer stdout cannot take is one line on stderr and exit 2; a message stderr
cannot take is dropped. ``cli.main`` runs inside ``answer_stdout``; ``cli.entry`` (a
process of its own) also puts stderr on ``message_stream``.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import os
import select
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# What a shell reports for a command whose reader went away (128 + SIGPIPE), as for any
# Unix tool that `| head` cut short.
BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE


def message_stream(stderr: TextIO | None) -> TextIO:
    """Standard error for the process's messages: ``stderr`` with the writes that fail
    dropped, or /dev/null when the process started without one (``2>&-``: Python leaves
    it None, and ``print(file=None)`` would write the message into stdout, into the
    answer). Whoever closed it, or filled its disk, cannot read the message; the exit
    code still says what happened."""
    if stderr is None:
        return open(os.devnull, "w")
    return _message_file(stderr)


def stdout_gone() -> int:
    """The reader of stdout left (``obsv replay | head``): not an error of the log or
    of the command, so nothing is printed. Python's docs (signal, "Note on SIGPIPE"):
    point stdout at /dev/null so the flush at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):  # a stdout without a descriptor
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return BROKEN_PIPE_STATUS


def answer_failed(answer: _AnswerFile | _NoStdout, exc: OSError) -> bool:
    """Whether ``exc`` is the failure of writing the answer (``answer_stdout``), and not
    any other OSError (reading the log, a socket, another file on the same full disk)."""
    return exc is answer.failure


def stdout_unwritable(answer: _AnswerFile | _NoStdout, exc: OSError, *,
                      done: str | None = None) -> int:
    """Standard output refused the answer (a full disk, a quota, EIO, none at all): one
    line that names the fix, and ``done``, what the command carried out all the same;
    exit 2 (no answer, as for a usage or configuration error: 1 would read as a
    finding). Then stdout goes to /dev/null, as in ``stdout_gone``, so that the flush
    at exit cannot raise again and print "Exception ignored"."""
    if isinstance(answer, _NoStdout):
        answer.gone = True  # what stdout_gone's /dev/null is for a descriptor
    problem = exc.strerror or str(exc)
    fix = "send the output elsewhere"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on its disk or " + fix
    also = f" ({done}; only its answer is lost)" if done else ""
    print(f"obsv: cannot write the answer to standard output: {problem}; {fix}{also}",
          file=sys.stderr)
    stdout_gone()
    return 2


class _AnswerFile(io.FileIO):
    """Standard output's descriptor, remembering the error of a write that failed.

    What tells an error of writing the answer from any other OSError (reading the log,
    a socket, another file on the same full disk, with the same errno) is where it was
    raised: here, the one place stdout's bytes reach the kernel. The buffered and text
    layers above pass the same exception object on, so ``main`` compares identity;
    neither errno, nor the traceback's frames (a C write leaves none), nor the state of
    stdout afterwards can say which file failed.
    """

    failure: OSError | None = None

    def write(self, data: ReadableBuffer, /) -> int:
        try:
            return _waiting_write(self, data)
        except OSError as exc:
            self.failure = exc
            raise


class _NoStdout(io.RawIOBase):
    """Standard output of a process started without one (``>&-``, where Python leaves
    ``sys.stdout`` None and a print vanishes while ``.buffer`` raises): every write fails
    as a write to a closed descriptor does, remembered as ``_AnswerFile`` remembers."""

    failure: OSError | None = None
    gone = False  # once the failure is reported: writes go nowhere (the flush at exit)

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        if self.gone:
            return memoryview(data).nbytes
        self.failure = OSError(errno.EBADF, "it is closed")
        raise self.failure


def _text_as_in(stream: TextIO | None, raw: io.RawIOBase, errors: str) -> TextIO:
    """Text over ``raw`` as Python built ``stream`` (its encoding, -u and tty buffering),
    with ``errors`` for what the encoding cannot hold; the raw layer's Python-level
    write runs once per buffer, not once per print."""
    return io.TextIOWrapper(_buffer_as_in(stream, raw),
                            encoding=getattr(stream, "encoding", None) or "utf-8",
                            errors=errors, newline="\n",
                            line_buffering=bool(getattr(stream, "line_buffering", False)),
                            write_through=getattr(stream, "write_through", False))


def _buffer_as_in(stream: TextIO | None, raw: io.RawIOBase) -> io.BufferedWriter:
    """A buffer over ``raw`` that writes as ``stream``'s does. Under -u or
    PYTHONUNBUFFERED (the image sets it) Python gives stdout and stderr no buffer: each
    print goes out at once, in its place among the other stream's lines."""
    unbuffered = isinstance(getattr(stream, "buffer", None), io.RawIOBase)
    return (_Unbuffered if unbuffered else io.BufferedWriter)(raw)


class _Unbuffered(io.BufferedWriter):
    """A buffer that writes what it is given at once, as ``python -u``'s stdout does;
    unlike a bare descriptor it writes all of it (a raw write may take only part)."""

    def write(self, data: ReadableBuffer, /) -> int:
        written = super().write(data)
        self.flush()
        return written


@contextlib.contextmanager
def answer_stdout() -> Iterator[_AnswerFile | _NoStdout | None]:
    """``sys.stdout`` on an ``_AnswerFile`` (or ``_NoStdout``) while ``main`` runs, then
    as it was. Only the stdout Python made for the process: a caller that replaced it
    (pytest's capture, an embedding) keeps its own, and its own errors (yields None)."""
    original = sys.stdout
    raw: _AnswerFile | _NoStdout
    if original is None and sys.__stdout__ is None:
        raw = _NoStdout()
    else:
        fd = _descriptor(original) if original is sys.__stdout__ else None
        if original is None or fd is None:
            yield None
            return
        original.flush()  # nothing of it may come after what the new one writes
        raw = _AnswerFile(fd, "w", closefd=False)
    sys.stdout = _text_as_in(original, raw, _errors_for(original))
    try:
        yield raw
    finally:
        with contextlib.suppress(OSError, ValueError):  # already reported, or a bug's
            sys.stdout.flush()
        sys.stdout = original


def _errors_for(stdout: TextIO | None) -> str:
    """``stdout``'s error handler, except that what its encoding cannot hold (a title in
    an ASCII or Latin-1 locale) is escaped as Python's stderr escapes it, instead of a
    UnicodeEncodeError half-way through the answer. UTF-8 holds every character:
    there, as Python chose (surrogateescape gives back a path's undecodable bytes)."""
    errors = getattr(stdout, "errors", None) or "strict"
    encoding = codecs.lookup(getattr(stdout, "encoding", None) or "utf-8").name
    if encoding != "utf-8" and errors in ("strict", "surrogateescape"):
        return "backslashreplace"
    return errors


def _descriptor(stream: TextIO | None) -> int | None:
    """The file descriptor under ``stream``; None for none (no stdout, or a closed one)."""
    if stream is None:
        return None
    try:
        return stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None


class _DroppedWhenUnwritable(io.FileIO):
    """Standard error for messages, whose failed writes (a full disk, a reader gone) are
    dropped: nobody can read that message, and raising would turn any exit code into a
    traceback's 1 (or 120, from Python's flush at exit). The exit code still says."""

    def write(self, data: ReadableBuffer, /) -> int:
        try:
            return _waiting_write(self, data)
        except OSError:
            return memoryview(data).nbytes


def _waiting_write(file: io.FileIO, data: ReadableBuffer) -> int:
    """``file.write(data)``, waiting where it would block. A parent may hand the process
    a non-blocking pipe (node, some CI runners set O_NONBLOCK on the shared end): a
    full one then refuses the write (None) where a blocking one waits for its reader,
    and the buffer above raised BlockingIOError. This waits as a blocking write would."""
    poll: select.poll | None = None
    while (written := io.FileIO.write(file, data)) is None:
        if poll is None:
            poll = select.poll()
            poll.register(file.fileno(), select.POLLOUT)
        poll.poll()
    return written


def _message_file(stderr: TextIO) -> TextIO:
    """``stderr`` as ``_DroppedWhenUnwritable``, built as Python built it; as it was
    when it has no descriptor."""
    fd = _descriptor(stderr)
    if fd is None:
        return stderr
    stderr.flush()
    return _text_as_in(stderr, _DroppedWhenUnwritable(fd, "w", closefd=False),
                       stderr.errors or "backslashreplace")

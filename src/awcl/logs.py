"""Warnings a person can read: one summary per reason, with counts and a few examples.

A partial download can make a prepare command skip thousands of inputs; printing one line
per input buries everything else. Inside :func:`summarized` (every ``awcl`` command runs in
it), a WARNING is printed the first time its *kind* appears (for the first few kinds), later
ones of the same kind are only counted, and at the end one summary lists each kind with its
count and a few examples, then where the full list is kept (``dataset.json`` key
``skipped`` for prepared datasets). With ``verbose=True`` (``awcl --verbose``) every warning
is printed as it happens.

The kind of a warning is the reason given with :func:`skipped` / :func:`noted`
(``extra={"awcl_kind": ..., "awcl_item": ...}``), otherwise the message with file paths and
numbers blanked out, so ``a/1.png: file not found`` and ``a/2.png: file not found`` are one
kind. Python ``warnings`` (Lightning's, torch's) are routed through the same summary.

The summary never exceeds :data:`MAX_LINES` lines, whatever the number of warnings.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_LINES = 25  # immediate first-of-kind lines + the final summary, at most
IMMEDIATE = 5  # kinds whose first warning is printed when it happens
KINDS_SHOWN = 6  # kinds listed in the summary (2 lines each)
EXAMPLES = 3
WIDTH = 200  # characters per printed line

# A path: something with a slash, or a name with a file extension (``x.png``).
_PATH = re.compile(
    r"(?:[A-Za-z]:)?[\w.~+\-()\[\] ]*[/\\][^\s:;,'\"]+|[\w\-+()\[\]]+(?:\.[\w\-+]+)*\.[A-Za-z][A-Za-z0-9]{1,4}\b"
)
_NUM = re.compile(r"\d+")


def kind_of(message: str) -> tuple[str, str | None]:
    """(kind, item): the message with paths -> ``<file>`` and digits -> ``N``, and its first
    path (None if it names none)."""
    first = _PATH.search(message)
    kind = _NUM.sub("N", _PATH.sub("<file>", message))
    return kind, first.group(0).strip() if first else None


def _one_line(text: str, width: int = WIDTH) -> str:
    lines = text.rstrip().splitlines() or [""]
    line = lines[0] + (" [...]" if len(lines) > 1 else "")
    return line if len(line) <= width else line[: width - 3] + "..."


def _examples(items: list[str]) -> str:
    """``a/b/x.png, a/b/y.png`` -> ``x.png, y.png (in a/b/)``: long shared folders once."""
    import os.path

    if len(items) > 1 and all(("/" in i or "\\" in i) for i in items):
        parent = os.path.commonpath([os.path.dirname(i) for i in items]) if all(
            os.path.isabs(i) == os.path.isabs(items[0]) for i in items
        ) else ""
        if parent and parent not in ("/", "."):
            names = [os.path.relpath(i, parent) for i in items]
            return f"{', '.join(names)} (in {parent}{os.sep})"
    return ", ".join(items)


@dataclass
class _Kind:
    first: str  # the first message of this kind, as logged
    reason: str | None  # the reason given with skipped()/noted(), if any
    count: int = 0
    examples: list[str] = field(default_factory=list)
    shown: bool = False


class WarningSummary(logging.Handler):
    """Console handler: INFO/DEBUG lines as they come, WARNINGs grouped by kind, ERRORs always.

    Writes through ``tqdm.write`` so a progress bar is not broken by a line.
    """

    def __init__(self, verbose: bool = False, level: int = logging.INFO):
        super().__init__(level)
        self.verbose = verbose
        self.kinds: dict[str, _Kind] = {}
        self.total = 0
        self.printed = 0  # warnings printed as they happened
        self.details: list[str] = []  # where the full lists are kept
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno != logging.WARNING or self.verbose:
                self._write(self.format(record))
                if record.levelno == logging.WARNING:
                    self.total += 1
                    self.printed += 1
                return
            message = record.getMessage()
            item = getattr(record, "awcl_item", None)
            reason = getattr(record, "awcl_kind", None)
            if reason is not None:
                key = f"{record.name}|{_NUM.sub('N', reason)}"
            else:
                tmpl, item = kind_of(message)
                key = f"{record.name}|{tmpl}"
            k = self.kinds.get(key)
            if k is None:
                k = self.kinds[key] = _Kind(first=message, reason=reason)
            k.count += 1
            self.total += 1
            if item and len(k.examples) < EXAMPLES and item not in k.examples:
                k.examples.append(str(item))
            if not k.shown and sum(x.shown for x in self.kinds.values()) < IMMEDIATE:
                k.shown = True
                self.printed += 1
                self._write(_one_line(f"{record.levelname} {record.name}: {message}"))
        except Exception:  # a logging handler must never raise into the caller
            self.handleError(record)

    def summary(self) -> list[str]:
        """The closing lines (empty when every warning was already printed)."""
        if self.total == self.printed:
            return []
        kinds = sorted(self.kinds.values(), key=lambda k: -k.count)
        n = len(kinds)
        lines = [
            f"awcl: {self.total:,} warning{'s' * (self.total != 1)} of {n} kind{'s' * (n != 1)}"
            " (the first of each kind is printed above; --verbose prints every one):"
        ]
        for k in kinds[:KINDS_SHOWN]:
            text = k.reason if k.reason is not None else k.first
            lines.append(_one_line(f"  {k.count:>7,} × {text}"))
            if k.examples and (k.count > 1 or k.reason is not None):
                lines.append(_one_line("            e.g. " + _examples(k.examples)))
        if n > KINDS_SHOWN:
            rest = sum(k.count for k in kinds[KINDS_SHOWN:])
            lines.append(f"  ... and {n - KINDS_SHOWN} more kinds ({rest:,} warnings)")
        for d in dict.fromkeys(self.details):
            lines.append(_one_line(f"full list: {d}"))
        budget = MAX_LINES - min(self.printed, IMMEDIATE)
        return lines[:budget]


_ACTIVE: list[WarningSummary] = []


def details_at(where: str) -> None:
    """Tell the active summary where the full list of this run's warnings is kept."""
    if _ACTIVE:
        _ACTIVE[-1].details.append(where)


def verbose() -> bool:
    """Whether the command runs with ``--verbose`` (every warning shown)."""
    return bool(_ACTIVE) and _ACTIVE[-1].verbose


@contextlib.contextmanager
def summarized(verbose: bool = False, level: int | None = None) -> Iterator[WarningSummary]:
    """Route log records and Python warnings to a :class:`WarningSummary` on the root logger
    for the duration; print the summary at the end (also after an error). Nested use
    re-uses the outer summary."""
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    root, own = logging.getLogger(), logging.getLogger("awcl")
    handler = WarningSummary(verbose=verbose, level=logging.DEBUG if verbose else logging.INFO)
    old_level, old_own = root.level, own.level
    root.setLevel(level if level is not None else logging.INFO)
    if verbose:
        own.setLevel(logging.DEBUG)  # awcl's debug lines, not every library's
    root.addHandler(handler)
    _ACTIVE.append(handler)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            if verbose:
                warnings.simplefilter("default")
            yield handler
    finally:
        logging.captureWarnings(False)
        _ACTIVE.remove(handler)
        root.removeHandler(handler)
        root.setLevel(old_level)
        own.setLevel(old_own)
        for line in handler.summary():
            handler._write(line)


def _log(logger: logging.Logger, item: object, reason: str, verb: str) -> None:
    logger.warning(
        "%s %s: %s", verb, item, reason, extra={"awcl_kind": f"{verb}: {reason}", "awcl_item": str(item)}
    )


def skipped(logger: logging.Logger, item: object, reason: str) -> None:
    """Log that ``item`` (a file, a table row) was skipped for ``reason`` (one kind per reason)."""
    _log(logger, item, reason, "skipped")


def noted(logger: logging.Logger, item: object, reason: str) -> None:
    """Log a problem with ``item`` that did not stop it from being used (one kind per reason)."""
    _log(logger, item, reason, "note")

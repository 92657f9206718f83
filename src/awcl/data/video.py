"""Reading scan videos and DICOM cine loops as grey-scale uint8 frames.

Content is recognised by its magic bytes, not its extension, so a text file called
``scan.avi`` or a GIF renamed ``.mp4`` is reported (or read) for what it is. Every problem
with a file raises :class:`~awcl.errors.DataError` with one line naming the file.

>>> for index, frame in iter_frames("scan.mp4", every=8):   # frame: uint8 [h, w]
...     ...
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from awcl.data.imageio import load_grey, to_grey_uint8
from awcl.data.store import anonymize
from awcl.errors import DataError

log = logging.getLogger(__name__)

# Extensions that ``prepare videos`` looks at (the content is still checked by magic bytes).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mpeg", ".mpg", ".gif", ".mkv", ".webm", ".wmv", ".ts"}
)
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})
IMAGE_KINDS = frozenset({"png", "jpeg", "bmp", "tiff"})


def sniff(path: str | os.PathLike) -> str:
    """Container kind from the first bytes of the file.

    Returns one of ``mp4`` (also mov/m4v), ``avi``, ``mpeg-ps``, ``mpeg-es``, ``mpeg-ts``,
    ``gif``, ``matroska``, ``asf``, ``dicom``, ``png``, ``jpeg``, ``bmp``, ``tiff``.
    Raises DataError for missing, empty or unrecognised files.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    size = p.stat().st_size
    if size == 0:
        raise DataError(f"{p}: empty file (0 bytes)")
    try:
        with open(p, "rb") as fh:
            head = fh.read(512)
    except OSError as err:
        raise DataError(f"{p}: cannot read ({err.strerror or err})") from None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if head[:4] == b"\x00\x00\x01\xb3":
        return "mpeg-es"
    if head[:1] == b"\x47" and len(head) > 376 and head[188:189] == b"\x47" and head[376:377] == b"\x47":
        return "mpeg-ts"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "asf"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if _looks_like_bare_dicom(head):
        return "dicom"
    raise DataError(
        f"{p}: not a recognised video, DICOM or image file "
        f"(its content does not match its {p.suffix or 'missing'} extension)"
    )


def _looks_like_bare_dicom(head: bytes) -> bool:
    """DICOM written without the 128-byte preamble starts with a group 0x0008 or 0x0002 tag."""
    return len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00") and head[4:6].isalpha()


def is_dicom(path: str | os.PathLike) -> bool:
    try:
        return sniff(path) == "dicom"
    except DataError:
        return False


def iter_frames(
    path: str | os.PathLike, every: int = 8, *, stats: dict[str, int] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, frame)`` for every ``every``-th frame; frame: uint8 [h, w].

    Videos (mp4/mov/avi/mpeg/gif/mkv...) are decoded with PyAV, DICOM single- or
    multi-frame files with pydicom; a still PNG/JPEG yields one frame. ``frame_index`` is
    the index in the original sequence (0, every, 2*every, ...). Raises DataError naming
    the file when it is empty, truncated, undecodable or not what its extension says.
    If ``stats`` is given, ``stats["decoded"]`` holds the number of frames decoded so far.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, not {every}")
    stats = {} if stats is None else stats
    stats["decoded"] = 0
    kind = sniff(path)
    if kind == "dicom":
        yield from _iter_dicom(Path(path), every, stats)
    elif kind in IMAGE_KINDS:
        stats["decoded"] = 1
        yield 0, load_grey(path)
    else:
        yield from _iter_av(Path(path), every, stats)


def read_frames(
    path: str | os.PathLike, every: int = 8, *, stats: dict[str, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All kept frames at once: (indices int64 [T], frames uint8 [T, h, w])."""
    indices, frames = [], []
    for i, f in iter_frames(path, every, stats=stats):
        indices.append(i)
        frames.append(f)
    if not frames:
        raise DataError(f"{path}: no frames could be decoded")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        # Rare (resolution change mid-stream): keep the dominant size, which crop/resize need.
        main = max(shapes, key=lambda s: sum(f.shape == s for f in frames))
        keep = [k for k, f in enumerate(frames) if f.shape == main]
        log.warning("%s: frame size changes mid-stream; kept %d of %d frames", path, len(keep), len(frames))
        indices = [indices[k] for k in keep]
        frames = [frames[k] for k in keep]
    return np.asarray(indices, dtype=np.int64), np.stack(frames)


# ---------------------------------------------------------------------------- PyAV
def _iter_av(path: Path, every: int, stats: dict[str, int]) -> Iterator[tuple[int, np.ndarray]]:
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable video ({_av_reason(err)})") from None
    with container:
        if not container.streams.video:
            raise DataError(f"{path}: contains no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame+slice threads: decoding is the whole cost
        count = 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                count += 1
                stats["decoded"] = count
                if index % every == 0:
                    # swscale converts straight to 8-bit luma; no RGB round trip.
                    yield index, frame.to_ndarray(format="gray")
        except (av.FFmpegError, OSError, ValueError) as err:
            raise DataError(
                f"{path}: video is truncated or corrupt after {count} frames ({_av_reason(err)})"
            ) from None
        if count == 0:
            raise DataError(f"{path}: no frames could be decoded (truncated or corrupt video)")


def _av_reason(err: Exception) -> str:
    msg = getattr(err, "strerror", None) or str(err)
    return f"{err.__class__.__name__}: {msg}".split("\n")[0]


# ---------------------------------------------------------------------------- DICOM
def _read_dicom(path: Path, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns per bad element; we report once
            return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=False)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({err.__class__.__name__}: {err})") from None


def _iter_dicom(path: Path, every: int, stats: dict[str, int]) -> Iterator[tuple[int, np.ndarray]]:
    from pydicom.pixels import apply_color_lut, iter_pixels

    ds = _read_dicom(path, stop_before_pixels=True)  # header only; frames stream below
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if "Rows" not in ds or "Columns" not in ds:
        raise DataError(f"{path}: DICOM file holds no image (no Rows/Columns)")
    index = 0
    try:
        # Reads one kept frame at a time from the file: a long cine never sits in memory.
        # YBR colour is converted to RGB by pydicom (raw=False).
        for index, arr in zip(range(0, n, every), iter_pixels(path, indices=range(0, n, every))):
            stats["decoded"] = index + 1
            if photometric == "PALETTE COLOR":
                arr = apply_color_lut(arr, ds)
            grey = to_grey_uint8(arr, str(path))
            if photometric == "MONOCHROME1":
                grey = 255 - grey  # MONOCHROME1: low values are white
            yield index, grey
    except DataError:
        raise
    except Exception as err:  # pydicom raises many types for missing codecs / bad data
        raise DataError(
            f"{path}: cannot decode DICOM pixel data at frame {index} "
            f"({err.__class__.__name__}: {err})".split("\n")[0]
        ) from None
    stats["decoded"] = n


def dicom_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """DICOM-safe metadata: patient id pseudonymised with ``anonymize``, no names or dates.

    Returns ``patient_id`` (hashed, or None), ``series``/``study`` (hashed UIDs or None),
    ``num_frames``, ``frame_time_ms``, ``rows``, ``columns``, ``modality``, ``manufacturer``.
    """
    p = Path(path)
    ds = _read_dicom(p, stop_before_pixels=True)

    def _get(tag: str) -> Any:
        value = ds.get(tag, None)
        return None if value in (None, "") else value

    pid = _get("PatientID")
    series, study = _get("SeriesInstanceUID"), _get("StudyInstanceUID")
    frame_time = _get("FrameTime")
    return {
        "patient_id": anonymize(str(pid)) if pid is not None else None,
        "series": anonymize(str(series)) if series is not None else None,
        "study": anonymize(str(study)) if study is not None else None,
        "num_frames": int(_get("NumberOfFrames") or 1),
        "frame_time_ms": float(frame_time) if frame_time is not None else None,
        "rows": int(_get("Rows") or 0),
        "columns": int(_get("Columns") or 0),
        "modality": str(_get("Modality") or ""),
        "manufacturer": str(_get("Manufacturer") or ""),
    }

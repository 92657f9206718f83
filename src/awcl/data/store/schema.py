"""The names of the prepared-dataset format (see :mod:`awcl.data.store`): its version, the
manifest's columns, the default frame size, and ``anonymize``, the keyed pseudonym every
identifier is written as."""

from __future__ import annotations

from typing import Any

from awcl.secret import keyed_hash

FORMAT = "awcl-prepared/1"
GRANULARITIES = ("coarse", "fine")  # the two anatomy label levels of a manifest
MANIFEST_COLUMNS = [
    "frame_id",
    "source",
    "video_id",
    "patient_id",
    "frame_index",
    "coarse_label",
    "fine_label",
    "mask_index",
]
LABEL_COLUMNS = ("coarse_label", "fine_label")
DEFAULT_SIZE = (224, 288)  # (H, W), the paper's frame size after cropping


def anonymize(value: Any, kind: str = "p") -> str:
    """Stable, keyed pseudonym for a patient name / DICOM identifier / source path (never
    store the original): ``kind`` + 16 hex digits of HMAC-SHA256 under the project secret
    (:mod:`awcl.secret`). Irreversible without the secret, which no dataset holds."""
    return f"{kind}{keyed_hash(str(value))[:16]}"

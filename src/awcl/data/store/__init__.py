"""The prepared-dataset format: every later step reads only this.

A prepared dataset is a directory::

    DIR/
      dataset.json   # format version, frame size, label hierarchy, mask classes, provenance
      manifest.csv   # one row per frame (row i <-> frames[i]); opens with pandas
      frames.npy     # uint8 [N, H, W] grey-scale, memory-mapped by readers
      masks.npy      # uint8 [M, H, W] class-index masks (only if the source has masks);
                     # manifest column ``mask_index`` points into it (-1 = no mask)

Manifest columns: ``frame_id, source, video_id, patient_id, frame_index, coarse_label,
fine_label, mask_index`` then any columns a recipe adds (split, pixel_size_mm, ...).
Labels are empty where unknown. A dataset is written to a temporary sibling directory
and renamed into place on success, so a failed run never leaves a half-written one.

The package: ``schema`` (the format's names, ``anonymize``), ``reader`` (``open_dataset``,
``PreparedDataset``, ``summarize``), ``writer`` (``DatasetWriter``) and ``merge`` (the union
of several datasets, cached). Import everything from here: ``from awcl.data.store import X``.
"""

from awcl.data.store.merge import (
    MERGE_CHUNK,
    default_cache,
    describe_source,
    manifest_sha256,
    merge_datasets,
    source_name,
    union_dataset,
    union_key,
)
from awcl.data.store.reader import PreparedDataset, open_dataset, read_manifest, summarize
from awcl.data.store.schema import (
    DEFAULT_SIZE,
    FORMAT,
    GRANULARITIES,
    LABEL_COLUMNS,
    MANIFEST_COLUMNS,
    anonymize,
)
from awcl.data.store.writer import DatasetWriter

__all__ = [
    "DEFAULT_SIZE", "FORMAT", "GRANULARITIES", "LABEL_COLUMNS", "MANIFEST_COLUMNS", "MERGE_CHUNK",
    "DatasetWriter", "PreparedDataset", "anonymize", "default_cache", "describe_source",
    "manifest_sha256", "merge_datasets", "open_dataset", "read_manifest", "source_name",
    "summarize", "union_dataset", "union_key",
]  # fmt: skip

"""Step 1 of the flow: sources -> prepared dataset (frame store + manifest)."""

from awcl.data.store import (
    MANIFEST_COLUMNS,
    DatasetWriter,
    PreparedDataset,
    anonymize,
    open_dataset,
)

__all__ = ["MANIFEST_COLUMNS", "DatasetWriter", "PreparedDataset", "anonymize", "open_dataset"]

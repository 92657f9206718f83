"""Label tables of a user's images: which file has which label and patient (a CSV with
columns the user names, or ``auto``), and optional fine -> coarse mapping files."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from awcl.errors import DataError

log = logging.getLogger(__name__)

def load_mapping(path: str | os.PathLike) -> dict[str, str]:
    """fine -> coarse mapping from a CSV (two columns: fine, coarse; header row) or YAML.

    YAML may be ``{fine: coarse}`` or ``{coarse: [fine, ...]}``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: mapping file not found")
    mapping: dict[str, str] = {}
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError:
            raise DataError(f"{p}: not UTF-8 text (save the file as UTF-8)") from None
        except yaml.YAMLError as err:
            raise DataError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise DataError(f"{p}: expected a mapping fine: coarse (or coarse: [fine, ...])")
        for key, value in data.items():
            if isinstance(value, list):
                for fine in value:
                    mapping[str(fine)] = str(key)
            else:
                mapping[str(key)] = str(value)
    else:
        try:
            df = pd.read_csv(
                p, sep=None, engine="python", dtype=str, keep_default_na=False, encoding="utf-8-sig"
            )
        except UnicodeDecodeError:
            raise DataError(f"{p}: not UTF-8 text (save the table as UTF-8)") from None
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(f"{p}: not a readable mapping table ({err})") from None
        if df.shape[1] < 2:
            raise DataError(f"{p}: mapping table needs two columns (fine, coarse)")
        for fine, coarse in zip(df.iloc[:, 0].str.strip(), df.iloc[:, 1].str.strip()):
            if fine in mapping and mapping[fine] != coarse:
                raise DataError(f"{p}: fine label {fine!r} maps to both {mapping[fine]!r} and {coarse!r}")
            mapping[fine] = coarse
    if not mapping:
        raise DataError(f"{p}: mapping file is empty")
    return mapping


AUTO = "auto"  # a LabelTable column given as "auto" is looked up among the usual names
# Usual header names per role, in order of preference, compared after lower-casing and
# turning spaces/dashes into underscores. The manifest's own names come first, so a table
# written like awcl's manifest (``image, coarse_label, fine_label, patient_id``) just works.
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "path": ("path", "image", "file", "filename", "file_name", "image_name", "image_path",
             "filepath", "file_path", "img", "video", "video_path"),
    "coarse": ("coarse_label", "coarse", "label", "class", "class_name"),
    "fine": ("fine_label", "fine"),
    "patient": ("patient_id", "patient", "patientid", "patient_num", "patient_number",
                "subject", "subject_id", "scan_id", "case_id"),
}  # fmt: skip
# Headers that look like labels: reported when a table has them but they are not used.
_LABELISH = re.compile(r"label|class|plane|view|anatomy|organ|diagnos|category|target|finding|standard")


def _sniff_sep(path: Path) -> str:
    """The separator of a table: one of , ; tab | seen in its first lines (default ',')."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            sample = fh.read(64 * 1024)
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except (csv.Error, OSError, UnicodeDecodeError):
        return ","  # one column, or unreadable: read_csv gives the precise error


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


@dataclass
class LabelTable:
    """Which columns of a user's label table hold what (names as the user wrote them).

    Each column is a header name, ``"auto"`` (the first of :data:`COLUMN_NAMES` the table
    has; the path column must then be found) or None (not used).
    """

    path: str | os.PathLike
    sep: str = AUTO  # or ",", ";", "\t", ...
    path_col: str | None = AUTO
    coarse_col: str | None = AUTO
    fine_col: str | None = AUTO
    patient_col: str | None = AUTO
    # filled by read(): role -> header used, and label-like headers left unused
    used: dict[str, str] = field(default_factory=dict)
    unused_labelish: list[str] = field(default_factory=list)

    def read(self) -> pd.DataFrame:
        """The table with columns ``path, coarse, fine, patient`` (strings, '' = unknown)."""
        p = Path(self.path)
        df = self._load(p)
        out = pd.DataFrame(index=df.index)
        self.used = {}
        for role, name in (
            ("path", self.path_col),
            ("coarse", self.coarse_col),
            ("fine", self.fine_col),
            ("patient", self.patient_col),
        ):
            col = self._column(p, df, role, name)
            if col is None:
                out[role] = ""
                continue
            self.used[role] = col
            out[role] = df[col].astype(str).str.strip()
        used = set(self.used.values())
        self.unused_labelish = [
            c for c in df.columns if c not in used and _LABELISH.search(_norm(c)) and (df[c] != "").any()
        ]
        self._log_columns(p)
        return out

    def _load(self, p: Path) -> pd.DataFrame:
        """The raw table, every cell a string; a missing or unreadable file is a DataError."""
        if not p.is_file():
            raise DataError(f"{p}: label table not found")
        try:
            # utf-8-sig: spreadsheet programs put a byte-order mark before the first header.
            sep = _sniff_sep(p) if self.sep == AUTO else self.sep
            return pd.read_csv(
                p, sep=sep, dtype=str, keep_default_na=False, engine="python", encoding="utf-8-sig"
            )
        except UnicodeDecodeError:
            raise DataError(f"{p}: not UTF-8 text (save the table as UTF-8)") from None
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, re.error) as err:
            raise DataError(f"{p}: not a readable table with separator {self.sep!r} ({err})") from None

    def _column(self, p: Path, df: pd.DataFrame, role: str, name: str | None) -> str | None:
        """The header of ``df`` that holds ``role``: the one named (a missing name is an
        error), the first usual name not taken yet for ``auto`` (the path must be found), or
        None when unused."""
        columns = ", ".join(repr(c) for c in df.columns)
        if name is not None and name.strip().lower() == AUTO:
            by_norm: dict[str, str] = {}
            for c in df.columns:
                by_norm.setdefault(_norm(c), c)
            taken = set(self.used.values())
            col = next(
                (by_norm[n] for n in COLUMN_NAMES[role] if n in by_norm and by_norm[n] not in taken),
                None,
            )
            if col is None and role == "path":
                raise DataError(
                    f"{p}: no image path column (separator {self.sep!r}; columns are {columns}); "
                    f"name it with --path-col, or call it one of: {', '.join(COLUMN_NAMES['path'][:6])}"
                )
            return col
        if name is None:
            return None
        # Headers with stray spaces ("Train ") are common in released tables: match stripped.
        col = {c.strip(): c for c in df.columns}.get(name.strip())
        if col is None:
            raise DataError(f"{p}: no column {name!r} (separator {self.sep!r}; columns are {columns})")
        return col

    def _log_columns(self, p: Path) -> None:
        """Log the columns used, and warn about label-like columns left unused."""
        desc = ", ".join(f"{role}={col.strip()!r}" for role, col in self.used.items())
        log.info("%s: columns used: %s", p.name, desc)
        if self.unused_labelish:
            log.warning(
                "%s: column%s %s look%s like labels but %s not used (name %s with --coarse-col / "
                "--fine-col; columns used: %s)",
                p, "s" * (len(self.unused_labelish) > 1),
                ", ".join(repr(c.strip()) for c in self.unused_labelish),
                "" if len(self.unused_labelish) > 1 else "s",
                "are" if len(self.unused_labelish) > 1 else "is",
                "them" if len(self.unused_labelish) > 1 else "it", desc,
            )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """What read() used, for dataset.json (``prepare.columns``)."""
        return {
            "used": {r: c.strip() for r, c in self.used.items()},
            "unused_label_like": [c.strip() for c in self.unused_labelish],
        }


def _label_rows(
    table: pd.DataFrame, mapping: dict[str, str] | None, strict: bool, source: str
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Apply the fine->coarse mapping; return usable rows and (file, reason) skips."""
    skips: list[tuple[str, str]] = []
    keep = []
    for i, row in table.iterrows():
        fine, coarse = row["fine"], row["coarse"]
        if mapping is not None and fine:
            if fine not in mapping:
                msg = f"fine label {fine!r} is not in the mapping file"
                if strict:
                    raise DataError(f"{source}: row {i + 2}: {msg}")
                skips.append((row["path"], msg))
                continue
            if not coarse:
                table.at[i, "coarse"] = mapping[fine]
            elif coarse != mapping[fine]:
                msg = f"coarse label {coarse!r} contradicts the mapping ({fine!r} -> {mapping[fine]!r})"
                if strict:
                    raise DataError(f"{source}: row {i + 2}: {msg}")
                skips.append((row["path"], msg))
                continue
        keep.append(i)
    return table.loc[keep], skips


def _hierarchy(rows: pd.DataFrame, mapping: dict[str, str] | None) -> dict[str, str]:
    if mapping is not None:
        return dict(sorted(mapping.items()))
    pairs = rows.loc[(rows["fine"] != "") & (rows["coarse"] != ""), ["fine", "coarse"]]
    pairs = pairs.drop_duplicates()
    if pairs.empty or pairs["fine"].duplicated().any():
        return {}  # no hierarchy, or the table's fine labels are not nested in coarse ones
    return dict(sorted(zip(pairs["fine"], pairs["coarse"])))


def _match_table(
    table: pd.DataFrame, files: list[str]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Label row for each relative file path (by path, then file name, then stem), and the
    table paths that match no file."""
    by_path: dict[str, int] = {}
    by_name: dict[str, int] = {}
    by_stem: dict[str, int] = {}
    keys = []
    for i, raw in enumerate(table["path"]):
        key = raw.replace("\\", "/").removeprefix("./")
        keys.append(key)
        by_path.setdefault(key, i)
        by_name.setdefault(Path(key).name, i)
        by_stem.setdefault(Path(key).stem, i)
    out, used = {}, set()
    for rel in files:
        i = by_path.get(rel, by_name.get(Path(rel).name, by_stem.get(Path(rel).stem)))
        if i is not None:
            out[rel] = dict(table.iloc[i])
            used.add(keys[i])
    unmatched = [k for k in dict.fromkeys(keys) if k not in used]
    return out, unmatched

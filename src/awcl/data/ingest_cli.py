"""``awcl prepare videos`` and ``awcl prepare images``: the command line over
:func:`awcl.data.ingest.prepare_videos` and :func:`awcl.data.ingest.prepare_images`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from awcl.data.ingest import PrepareStats, parse_crop, prepare_images, prepare_videos
from awcl.data.label_table import AUTO, COLUMN_NAMES
from awcl.data.store import DEFAULT_SIZE, open_dataset
from awcl.options import cli_type, parse_size, positive_int

log = logging.getLogger(__name__)

def _print_summary(out: Path, st: PrepareStats) -> None:
    ds = open_dataset(out)
    m = ds.manifest
    print(
        f"prepared {out}: {len(m)} frames from {st.videos} files "
        f"({m['patient_id'].nunique()} patients), {ds.size[0]}x{ds.size[1]}; "
        f"{st.frames_decoded} frames decoded; skipped {st.skipped}"
    )
    for col in ("coarse_label", "fine_label"):
        counts = m[col].dropna().value_counts().sort_index()
        if len(counts):
            print(f"  {col}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if ds.meta.get("skipped"):
        # the reasons were logged (one summary per reason); the full list stays in the dataset
        print(f"  every skipped input with its reason: {out / 'dataset.json'}, key \"skipped\"")


def _add_common(p: argparse.ArgumentParser, default_crop: str = "auto") -> None:
    p.add_argument("src", help="source folder (searched recursively)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--size", type=cli_type(parse_size, minimum=8), default=DEFAULT_SIZE, metavar="HxW",
                   help="frame size of the prepared dataset")  # fmt: skip
    p.add_argument(
        "--crop",
        type=cli_type(parse_crop),
        default=default_crop,
        help="auto (detect the ultrasound region), none, or a fixed box y0,y1,x0,x1",
    )
    p.add_argument("--no-crop", dest="crop", action="store_const", const=None, help="same as --crop none")
    p.add_argument("--sep", default=AUTO, help="label table separator ('auto': detected from the table)")

    def col(text: str) -> str | None:
        return None if text.strip().lower() == "none" else text

    for role, flag, what in (
        ("path", "--path-col", "the file path"),
        ("coarse", "--coarse-col", "the coarse label"),
        ("fine", "--fine-col", "the fine label"),
        ("patient", "--patient-col", "the patient/scan id"),
    ):
        names = "/".join(COLUMN_NAMES[role][:4])
        p.add_argument(
            flag, type=col, default=AUTO, metavar="NAME",
            help=f"table column with {what}; 'auto' takes the first of {names}, ... the table "
            "has" + ("" if role == "path" else ", 'none' leaves it unused"),
        )  # fmt: skip
    p.add_argument("--mapping", default=None, help="fine->coarse mapping (CSV fine,coarse or YAML)")
    p.add_argument(
        "--strict", action="store_true", help="fail on a label missing from the mapping instead of skipping"
    )
    p.add_argument(
        "--keep-names", action="store_true",
        help="write source paths as they are into video_id/file (default: keyed pseudonyms, as file "
        "and folder names often name the patient); only for sources whose names are safe",
    )


def _table_options(args: argparse.Namespace) -> dict:
    """The label-table flags both commands share (separator, columns, mapping, strict)."""
    names = ("sep", "path_col", "coarse_col", "fine_col", "patient_col", "mapping", "strict", "keep_names")
    return {n: getattr(args, n) for n in names}


def _run_videos(args: argparse.Namespace) -> int:
    st = PrepareStats()
    out = prepare_videos(args.src, args.out, every=args.every, size=args.size, crop=args.crop,
                         labels_csv=args.labels, stats=st, **_table_options(args))  # fmt: skip
    _print_summary(out, st)
    return 0


def _run_images(args: argparse.Namespace) -> int:
    st = PrepareStats()
    out = prepare_images(args.src, args.out, labels=args.labels, size=args.size, crop=args.crop,
                         include_unlabelled=args.include_unlabelled, stats=st,
                         **_table_options(args))  # fmt: skip
    _print_summary(out, st)
    return 0


def register_prepare(sub: argparse._SubParsersAction) -> None:
    """Add ``awcl prepare videos`` and ``awcl prepare images``."""
    pv = sub.add_parser(
        "videos",
        help="scan videos (mp4/avi/mov/mpeg/gif) and DICOM cine -> prepared dataset",
        description="Walk SRC for videos and DICOM files, keep every k-th frame, crop the "
        "ultrasound region, resize and write a prepared dataset.",
    )
    _add_common(pv)
    pv.add_argument("--every", type=positive_int, default=8, help="keep every k-th frame")
    pv.add_argument("--labels", default=None, help="optional table of per-video labels")
    pv.set_defaults(func=_run_videos)

    pi = sub.add_parser(
        "images",
        help="a folder of still images plus a label table -> prepared dataset",
        description="Prepare the images named in a label table. Columns named like awcl's "
        "manifest (image/path/file/filename, coarse_label, fine_label, patient_id) are used "
        "without flags; name others with --path-col/--coarse-col/--fine-col/--patient-col. "
        "Label-like columns left unused are reported.",
    )
    _add_common(pi)
    pi.add_argument("--labels", required=True, help="label table (CSV/TSV...)")
    pi.add_argument(
        "--include-unlabelled",
        action="store_true",
        help="also add images under SRC that the table does not name (no labels)",
    )
    pi.set_defaults(func=_run_images)

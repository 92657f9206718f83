"""Exporting phantom sweeps as raw .mp4 videos (PyAV), the input of the video-ingestion path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from awcl.data.phantom.config import PhantomConfig
from awcl.data.phantom.planning import _plan_scan, _Scan, _scan_roster
from awcl.data.phantom.rendering import _Renderer, _screen, _screen_geometry
from awcl.errors import AwclError


def make_phantom_videos(
    out_dir: str | Path,
    cfg: PhantomConfig | None = None,
    fps: int = 25,
    codec: str = "mpeg4",
    screen: bool = True,
    masks_out: dict[str, list[np.ndarray | None]] | None = None,
) -> list[Path]:
    """Write each phantom sweep as a raw .mp4 for the video-ingestion path.

    With ``screen`` (default) each frame is the text-free sweep image at ``cfg.size`` embedded in
    a larger scanner screen (panels, text, TGC curve, depth ticks, a live cine counter), so that
    cropping has something real to remove; the image sits at ``_screen_geometry(*cfg.size)``.
    Without it, the frames are exactly those of ``make_phantom`` (fan plus corner text).
    Returns the written paths (``<video_id>.mp4``), sorted. Each file is written under a
    temporary name and renamed, so an interrupted run leaves no truncated video.
    ``masks_out``, when given, receives each video's head masks (``[H, W]`` at ``cfg.size``
    in image coordinates, or None on frames without a head) under its video id.
    """
    import av  # PyAV; imported here so the phantom itself needs only numpy/cv2

    cfg = cfg or PhantomConfig()
    cfg.validate()
    h, w = _video_size(cfg.size, screen)
    render_cfg = replace(cfg, text=False) if screen else cfg
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AwclError(f"{out_dir}: cannot create the output folder ({err.strerror or err})") from None
    paths = []
    for index, (patient, visit, fetus) in enumerate(_scan_roster(cfg)):
        plan = _plan_scan(cfg, index, patient, visit, fetus)
        r = _Renderer(plan, render_cfg)
        path = out_dir / f"{plan.video_id}.mp4"
        tmp = out_dir / f".{plan.video_id}.tmp.mp4"
        try:
            with av.open(str(tmp), "w") as container:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.options = {"qmin": "1", "qmax": "3"} if codec == "mpeg4" else {}  # near-lossless: speckle is costly to code
                _encode_sweep(container, stream, r, plan, cfg.frames_per_scan, screen, masks_out)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    return sorted(paths)


def _video_size(size: tuple[int, int], screen: bool) -> tuple[int, int]:
    """(H, W) of the videos: the scanner screen around the image, or the image; even, as
    yuv420p needs."""
    h, w = size
    if screen:
        _, _, h, w = _screen_geometry(h, w)
    if h % 2 or w % 2:
        raise AwclError(f"phantom: video size must be even, got {h}x{w}")
    return h, w


def _encode_sweep(container: Any, stream: Any, r: _Renderer, plan: _Scan, n: int, screen: bool,
                  masks_out: dict[str, list[np.ndarray | None]] | None) -> None:
    """Render the sweep's ``n`` frames (in the screen with ``screen``), encode and mux them,
    then flush the encoder; each frame's head mask goes to ``masks_out``."""
    import av

    for i in range(n):
        grey, mask = r.render(i)
        if masks_out is not None:
            masks_out.setdefault(plan.video_id, []).append(mask)
        if screen:
            grey = _screen(grey, plan, i, n)
        frame = av.VideoFrame.from_ndarray(np.repeat(grey[:, :, None], 3, axis=2), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)

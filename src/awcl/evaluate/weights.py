"""Download torchvision's ImageNet ResNet-18 weights (how a user brings the ImageNet init).

The file is streamed to a temporary path, its SHA-256 checked (against ``--sha256`` when given,
else against the hash prefix torchvision puts in its file names, as ``torch.hub`` does), then
renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from pathlib import Path

from awcl.atomic import atomic_file
from awcl.errors import AwclError

IMAGENET_RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")


def download_weights(
    out: str | os.PathLike,
    url: str = IMAGENET_RESNET18_URL,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Stream ``url`` to ``out`` atomically and verify its hash; returns ``out``.

    ``sha256``: full expected digest; without it, the hash prefix in the file name
    (torchvision's ``name-<sha256 prefix>.pth`` convention) is checked; a URL with neither
    is refused, so an unverified file is never written.
    """
    out = Path(out)
    expected = sha256.lower() if sha256 else None
    found = _HASH_IN_NAME.search(url.rsplit("/", 1)[-1].split("?")[0])
    prefix = found.group(1) if found else None
    if not expected and not prefix:
        raise AwclError(f"{url}: no hash in the file name; pass --sha256 to verify the download")
    out.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with atomic_file(out) as tmp:  # removed unless the hash matches
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
                while chunk := resp.read(1 << 20):
                    h.update(chunk)
                    fh.write(chunk)
        except (OSError, ValueError) as err:
            raise AwclError(f"{url}: download failed ({err})") from None
        digest = h.hexdigest()
        ok = digest == expected if expected else digest.startswith(prefix or "")
        if not ok:
            want = expected or f"{prefix}..."
            raise AwclError(f"{url}: SHA-256 mismatch (got {digest[:16]}..., expected {want[:16]}...)")
    return out

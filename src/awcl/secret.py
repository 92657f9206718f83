"""The pseudonymisation key: the secret that makes hashed identifiers irreversible.

Patient ids, DICOM UIDs and source file names are written to a prepared dataset only as
``HMAC-SHA256(secret, value)``. Without the secret, a short id space (a 6-digit PatientID) can
no longer be searched by hashing every candidate, as it could with a fixed public salt. The
secret lives outside every dataset:

1. ``$AWCL_SECRET`` -- the secret itself (e.g. a project-wide value shared by a team, so that
   separately prepared datasets get the same ids);
2. else the file ``$AWCL_SECRET_FILE``;
3. else ``~/.config/awcl/secret`` (``$XDG_CONFIG_HOME/awcl/secret``).

A missing file is created on first use with 32 random bytes (``secrets.token_bytes``) and mode
0600. The same secret always gives the same ids, so preparing the same source twice gives
byte-identical datasets; a different secret gives unrelated ids.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from awcl.errors import AwclError

log = logging.getLogger("awcl.data.secret")  # the name its log lines have always had

SECRET_ENV = "AWCL_SECRET"
SECRET_FILE_ENV = "AWCL_SECRET_FILE"
MIN_SECRET_BYTES = 16  # shorter secrets could themselves be guessed

_cache: dict[tuple[str, str], bytes] = {}


class SecretError(AwclError):
    """The pseudonymisation secret cannot be read, created or is too weak."""


def secret_path() -> Path:
    """Where the secret file is (or will be created)."""
    if os.environ.get(SECRET_FILE_ENV):
        return Path(os.environ[SECRET_FILE_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "awcl" / "secret"


def _create(path: Path) -> None:
    """Write a fresh random secret with mode 0600; O_EXCL so two processes agree on one."""
    from awcl.atomic import sweep_temps, temp_sibling

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sweep_temps(path.parent, path.name)
    # written in full under a temporary name, then linked to its name (fails if it exists): a
    # kill -9 or a concurrent reader never sees an empty secret file
    value = secrets.token_bytes(32).hex() + "\n"
    tmp = temp_sibling(path)
    try:
        _write_new(tmp, value)
        os.link(tmp, path)
    except FileExistsError:
        return  # another process created it first: use theirs
    except OSError:  # a file system without hard links: create it in place
        try:
            _write_new(path, value)
        except FileExistsError:
            return
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def project_secret() -> bytes:
    """The key of every pseudonym (see the module docstring for where it comes from)."""
    env = os.environ.get(SECRET_ENV)
    key = ("env", env) if env else ("file", str(secret_path()))
    if key in _cache:
        return _cache[key]
    if env:
        value = env.encode()
        where = f"${SECRET_ENV}"
    else:
        path = secret_path()
        where = str(path)
        try:
            if not path.exists():
                _create(path)
            value = path.read_bytes().strip()
        except OSError as err:
            raise SecretError(f"{path}: cannot read or create the pseudonymisation secret ({err.strerror or err})") from None
    if len(value) < MIN_SECRET_BYTES:
        raise SecretError(f"{where}: pseudonymisation secret is shorter than {MIN_SECRET_BYTES} bytes")
    if not env:
        _warn_if_shared(secret_path())
    _cache[key] = value
    return value


def _warn_if_shared(path: Path) -> None:
    """One warning when other users may read the key file (it should be 0600)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s: the pseudonymisation secret is readable by other users (mode %o); "
                    "run: chmod 600 %s", path, mode & 0o777, path)


def secret_values() -> list[str]:
    """The key as any config could spell it (``$AWCL_SECRET``, the key file's text), without
    creating a key file: what no interpolation may ever copy into a shared file."""
    out = []
    if os.environ.get(SECRET_ENV):
        out.append(os.environ[SECRET_ENV])
    try:
        text = secret_path().read_text().strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if text:
        out.append(text)
    return [v for v in out if len(v) >= 4]


def keyed_hash(value: str) -> str:
    """Hex HMAC-SHA256 of ``value`` under the project secret."""
    return hmac.new(project_secret(), value.encode(), hashlib.sha256).hexdigest()


def key_fingerprint() -> str:
    """A short public tag of the secret in use (tells whether two datasets share a key;
    it reveals nothing about the key or any id)."""
    return keyed_hash("awcl-key-fingerprint")[:12]

"""Which environment variables a config may read: OmegaConf's ``${oc.env:NAME}``, replaced
for every config this process resolves (pretraining, fine-tuning, studies) by one limited to
the user's own ``AWCL_*`` variables. Importing :mod:`awcl.config` registers it.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

ENV_PREFIX = "AWCL_"  # the only environment variables a config may read (``${oc.env:...}``)
# awcl's own settings: never readable from a config, whatever their value
ENV_DENIED = ("AWCL_SECRET", "AWCL_SECRET_FILE", "AWCL_CACHE", "AWCL_CACHE_DIR", "AWCL_TORCH",
              "AWCL_VENV")
_NO_DEFAULT = object()


def _project_env(name: str, default: Any = _NO_DEFAULT) -> str | None:
    """OmegaConf's ``oc.env``, limited to the user's own ``AWCL_*`` variables.

    A resolved config is written into config.yaml, study.json, run folder names and the
    reports, so reading any other variable (``${oc.env:AWS_SECRET_ACCESS_KEY}``) would copy the
    user's environment into files meant to be shared. awcl's own settings (``ENV_DENIED``,
    the pseudonymisation key among them) are refused too, and so is any variable whose value
    holds the key.
    """
    name = str(name)
    if not name.startswith(ENV_PREFIX) or name in ENV_DENIED:
        raise ValueError(
            f"${{oc.env:{name}}} is not allowed: a config may read only {ENV_PREFIX}* environment "
            f"variables other than awcl's own settings ({', '.join(ENV_DENIED)})"
        )
    if name in os.environ:
        value = os.environ[name]
        from awcl.secret import secret_values  # looked up when used, as before the move

        if any(v in value for v in secret_values()):
            raise ValueError(f"${{oc.env:{name}}} is not allowed: its value is the pseudonymisation key")
        return value
    if default is _NO_DEFAULT:
        raise ValueError(f"environment variable {name!r} is not set")
    return None if default is None else str(default)


# replaces the built-in for every config this process resolves (pretrain, finetune, study)
OmegaConf.register_resolver("oc.env", _project_env, replace=True, use_cache=False, annotation_validation="off")

"""Moved to :mod:`awcl.secret` (the pseudonymisation key: data preparation hashes ids with it,
and the config layer refuses to copy it into files). This name stays an alias of that
module, so ``awcl.data.secret.X`` and a patch of it reach the same objects."""

import sys

from awcl import secret

sys.modules[__name__] = secret

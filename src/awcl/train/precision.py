"""Moved to :mod:`awcl.runtime.precision` (the precision chosen for the hardware, shared with
the downstream runs). This name stays an alias of that module, so ``awcl.train.precision.X``
and a patch of it reach the same objects."""

import sys

from awcl.runtime import precision

sys.modules[__name__] = precision

"""Moved to :mod:`awcl.runtime.schedule` (the per-step learning-rate factors, shared with the
downstream runs). This name stays an alias of that module, so ``awcl.train.schedule.X`` and
a patch of it reach the same objects."""

import sys

from awcl.runtime import schedule

sys.modules[__name__] = schedule

"""Moved to :mod:`awcl.runtime.trainer` (the one Lightning Trainer configuration, shared with
the downstream runs). This name stays an alias of that module, so ``awcl.train.trainer.X``
and a patch of it reach the same objects."""

import sys

from awcl.runtime import trainer

sys.modules[__name__] = trainer

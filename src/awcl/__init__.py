"""awcl: anatomy-aware contrastive pretraining for ultrasound, its baselines and transfer studies.

Data flows one way: sources -> prepared dataset (``awcl.data``) -> pretraining run
(``awcl.methods`` + ``awcl.train``) -> downstream runs (``awcl.evaluate``) -> report
(``awcl.study``).
"""

from awcl import _compat  # noqa: F401  (must precede any torchvision import)

__version__ = "0.1.0"

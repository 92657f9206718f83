"""Recipes for public ultrasound data sets, each reading the original release layout.

``hc18`` (fetal head, masks, pixel size, HC), ``pocus`` (lung videos and images),
``fetal_planes`` (FETAL_PLANES_DB planes and brain sub-planes), ``busi`` (breast lesions).
Each module has ``prepare_<name>(src, out, config)`` and ``register_prepare(subparsers)``
for ``awcl prepare <name> SRC --out DIR`` (``--download`` fetches the public release).
"""

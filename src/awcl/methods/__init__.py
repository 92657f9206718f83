"""Pretraining methods, one small module each over ``methods.base.Method``."""

from awcl.methods import awcl, clpi, simclr, supervised, uscl  # noqa: F401  (register)
from awcl.methods.base import METHODS, Method, build_method

__all__ = ["METHODS", "Method", "build_method"]

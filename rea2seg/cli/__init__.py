"""The ``rea2seg`` command line (``rea2seg.cli.main:main``)."""
from .main import main

__all__ = ["main"]

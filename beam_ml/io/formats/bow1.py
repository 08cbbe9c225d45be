"""Bag of words with 1-based word ids (LIBSVM tools, UCI ids): format ``bow`` otherwise
(:mod:`beam_ml.io.formats.bow`)."""

from __future__ import annotations

from beam_ml.io.formats.base import Format
from beam_ml.io.formats.bow import BowFormat

__all__ = ["FORMAT"]

FORMAT: Format = BowFormat("bow1", zero_based=False)

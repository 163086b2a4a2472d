"""Readers, writers and their options (kept for plugins written against curate 0.1; the
contract itself lives in :mod:`curate.contracts` and is exported from ``curate``)."""

from .contracts import Options, Reader, Writer, head_has_keys, raise_error, samples_from_json

__all__ = ["Options", "Reader", "Writer", "head_has_keys", "raise_error", "samples_from_json"]

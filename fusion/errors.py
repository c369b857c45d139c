"""Errors written for people: what went wrong, where, what is allowed, how to fix it.

Every error the pipeline raises on bad input derives from :class:`FusionError`, so the
command line can print it without a traceback, and a per-case stage can record it
against the case instead of stopping the cohort.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FusionError(Exception):
    """Bad input or configuration; the message alone tells the user what to do."""


class ConfigError(FusionError):
    """The study file is invalid (unknown key, wrong type, missing file)."""


class ManifestError(FusionError):
    """The cohort manifest is invalid; the message lists every problem found."""


def did_you_mean(name: str, allowed: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest allowed spelling, or ''.

    MONAI's ``look_up_option`` does the same: a typo in a study file should cost the
    user one glance, not a read of the documentation.
    """
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""

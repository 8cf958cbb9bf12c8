"""Annotation assignments: which label kind each site trains with.

- `upstream`: the manifest's per-site defaults (upstream's hard-coded map for faz/odoc).
- `mask`: full masks everywhere (fully supervised upper bound).
- any label kind (`scribble`, `keypoint`, ...): that kind at every site.
- `rotate<k>`: the upstream map shifted by k sites (site i gets the default of site i-k), so each
  site keeps its images but changes its annotation kind.
- `random<s>`: each site draws a kind uniformly from LABEL_KINDS with seed s.
"""
from __future__ import annotations

import re

import numpy as np

from fedicra.data.errors import DataError
from fedicra.data.manifest import FULL_LABEL, LABEL_KINDS, Manifest

# The grammar of assignment names, once: the run schema, the workflow schema check and the
# workflow's wildcard constraint all use ASSIGNMENT_PATTERN.
ASSIGNMENT_REGEX = "|".join(["upstream", FULL_LABEL, *LABEL_KINDS, r"rotate[0-9]+", r"random[0-9]+"])
ASSIGNMENT_PATTERN = f"^({ASSIGNMENT_REGEX})$"
_PATTERN = re.compile(r"^(rotate|random)(\d+)$")
NAMES_HELP = f"upstream, {FULL_LABEL}, {', '.join(LABEL_KINDS)}, rotate<k>, random<seed>"


def resolve_assignment(name: str, manifest: Manifest) -> list[str]:
    n = len(manifest.sites)
    if name == "upstream":
        return manifest.default_labels
    if name == FULL_LABEL or name in LABEL_KINDS:
        return [name] * n
    match = _PATTERN.match(name)
    if not match:
        raise DataError(f"unknown annotation assignment {name!r}: expected one of {NAMES_HELP}")
    kind, number = match.group(1), int(match.group(2))
    if kind == "rotate":
        defaults = manifest.default_labels
        return [defaults[(i - number) % n] for i in range(n)]
    rng = np.random.default_rng(number)
    return [LABEL_KINDS[int(i)] for i in rng.integers(0, len(LABEL_KINDS), size=n)]

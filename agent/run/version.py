"""Which code a job ran, comparable between the driver and every Ray node.

A node needs this project installed at the driver's version (docs/sweeps-and-ray.md), and nothing
else makes sure of it. :func:`code_version` hashes the package's Python sources (``agent/``,
``envs/``, ``models/``: each file's path in the checkout and its bytes), which every node can
compute, with or without git; :func:`git_commit` says which commit that was where git is there
(for people: a node's copy may have no ``.git``).
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "envs", "models")


@cache
def code_version() -> str:
    """16 hex digits of a SHA-256 over the sources, computed once per process (the code a
    process runs is the code it imported, not what a later checkout left on disk)."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((CHECKOUT / package).rglob("*.py")):
            data = path.read_bytes()
            name = path.relative_to(CHECKOUT).as_posix().encode()
            digest.update(b"%d:%s:%d:" % (len(name), name, len(data)) + data)
    return digest.hexdigest()[:16]


@cache
def git_commit() -> str | None:
    """The checkout's commit, with ``-dirty`` if tracked files differ from it; None without git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(CHECKOUT), "diff", "--quiet", "HEAD", "--", *PACKAGES],
            capture_output=True,
            timeout=10,
        ).returncode
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")

"""drive-attention: driving agents that fuse camera frames and sensor vectors with cross-modal
attention, and show what they attend to.

The installed package is imported as ``drive_attention``; its parts are the repository's
top-level folders: ``drive_attention.envs`` (the simulators and their Gymnasium ids),
``drive_attention.models`` (encoders and SB3 extractors) and ``drive_attention.agent``
(training, evaluation, policies). An installed wheel holds them inside this package; in a
source checkout they stay where they are, beside this folder, and are found from here.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

PARTS = ("agent", "envs", "models")  # the repository's folders that make up the package

_here = Path(__file__).resolve().parent
if not (_here / "agent").is_dir() and (_here.parent / "agent" / "__init__.py").is_file():
    # a source checkout (run from the repository, or installed in editable mode): the parts are
    # the design card's top-level folders next to this one
    __path__.append(str(_here.parent))

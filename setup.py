"""The wheel's layout: the repository's top-level folders ``agent``, ``envs`` and ``models``
become ``drive_attention.agent``, ``drive_attention.envs`` and ``drive_attention.models``, so the
installed package claims one import name (the rest of the metadata is in pyproject.toml)."""

from setuptools import find_packages, setup

PARTS = ("agent", "envs", "models")  # as drive_attention.PARTS

setup(
    packages=["drive_attention"]
    + [f"drive_attention.{name}" for name in find_packages(include=[f"{p}*" for p in PARTS])],
    package_dir={
        "drive_attention": "drive_attention",
        **{f"drive_attention.{p}": p for p in PARTS},
    },
)

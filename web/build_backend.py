"""emo's build backend: setuptools', after putting onnxruntime-web into the package where it is
missing (web/vendor.py: npm ci at the pinned version), so ``pip install .`` from a checkout gives
the on-device page as ``make web`` does. Without npm the install goes on, with a warning: emo
serve then shows its server-side page at / and says how to get the other.

pyproject.toml names it (``backend-path = ["web"]``); an sdist already holds the files.
"""

from __future__ import annotations

import sys

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every hook, then the build ones wrapped below)
from vendor import vendor


def _vendor() -> None:
    why = vendor()
    if why:
        print(f"warning: emo's on-device page will be missing its runtime: {why}", file=sys.stderr)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _vendor()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    _vendor()
    return _setuptools.build_sdist(sdist_directory, config_settings)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _vendor()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)

"""Builds the C core (``pylvs._core``) with cffi in out-of-line API mode."""

from setuptools import setup

setup(cffi_modules=["src/pylvs/_build.py:ffibuilder"])

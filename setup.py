"""The optional C part of ringrt: the small all_reduce's steps (ringrt/_native/_fastpath.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no
C compiler), the install goes on and ringrt runs the same steps in Python.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("ringrt._native._fastpath", ["ringrt/_native/_fastpath.c"],
                             extra_compile_args=["-O3", "-fno-fast-math",
                                                 "-ffp-contract=off"],
                             optional=True)])

"""Build the optional C kernels (everything else is in pyproject.toml).

``optional=True``: where no C compiler is found the build goes on without them and
``mirrorflow.dynamics`` falls back to its torch path (see docs/benchmarks.md).
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-std=c99"]
setup(ext_modules=[Extension("mirrorflow.dynamics._kernels", ["src/mirrorflow/dynamics/_kernels.c"],
                             extra_compile_args=flags, optional=True)])

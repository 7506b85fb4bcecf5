"""Build the optional C kernels (everything else is in pyproject.toml).

``optional=True``: where no C compiler is found the build goes on without them and the code
that uses them falls back to its torch path (see docs/benchmarks.md).
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-std=c99"]
setup(ext_modules=[
    Extension("mirrorflow.dynamics._kernels", ["src/mirrorflow/dynamics/_kernels.c"],
              extra_compile_args=flags, optional=True),
    # fused float32 kernels of the batched network experiments (mirrorflow.experiments._fused)
    # (-fno-trapping-math: lets GCC vectorize the branch-free clamps, no FP traps are enabled;
    # -fno-math-errno: sqrtf and friends inline, the kernels never read errno)
    Extension("mirrorflow.experiments._nnkernels",
              ["src/mirrorflow/experiments/_nnkernels.c", "src/mirrorflow/experiments/_nn_attention.c",
               "src/mirrorflow/experiments/_nn_layernorm.c"],
              depends=["src/mirrorflow/experiments/_nnkernels.h"],
              extra_compile_args=flags + ([] if sys.platform == "win32" else ["-fno-trapping-math", "-fno-math-errno"]),
              optional=True),
])

import os
import sys
import tempfile

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# pretrained models (lora-lm's char GPT-2) go to a fresh folder, never the user's cache
os.environ.setdefault("MIRRORFLOW_CACHE", tempfile.mkdtemp(prefix="mirrorflow-test-cache-"))

# property tests draw the same examples on every run (same seed, same numbers; no flaky CI)
from hypothesis import settings

settings.register_profile("mirrorflow", derandomize=True, print_blob=True)
settings.load_profile("mirrorflow")


@pytest.fixture(autouse=True)
def _restore_jax_x64():
    """A test (or a docs block it runs) that switches on JAX's 64-bit mode must not leave it on
    for the next test of the same worker: JAX's config is process-global."""
    jax = sys.modules.get("jax")
    old = bool(jax.config.jax_enable_x64) if jax is not None else False
    yield
    jax = sys.modules.get("jax")
    if jax is not None and bool(jax.config.jax_enable_x64) != old:
        jax.config.update("jax_enable_x64", old)

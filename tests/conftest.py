import os
import tempfile

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

"""Framework integrations of :class:`~mirrorflow.schedules.WeightDecayScheduler` (optional extras).

* :mod:`mirrorflow.schedules.integrations.hf` — a Hugging Face ``TrainerCallback``
  (``pip install mirrorflow[hf]``);
* :mod:`mirrorflow.schedules.integrations.lightning` — a Lightning ``Callback``
  (``pip install mirrorflow[lightning]``).

This package imports neither framework; only its submodules do. See docs/training.md.
"""

__all__ = ["hf", "lightning"]

"""Following a training run as its checkpoints appear (the paper's real-time property, Sec. 3.2).

* :mod:`~saetrack.live.checkpoints` — which folders of a training run's output are checkpoints, at which step, and
  when each is complete (never read half-written).
"""

"""The pipeline's stages, one module per notebook, each with its config hash, the function that runs it and a
typed loader of its outputs, all built on :mod:`saetrack.pipeline.skeleton`; :mod:`saetrack.pipeline.stages` declares
them in order for ``run_all.py``.
"""

"""saetrack: SAE-Track — chains of sparse autoencoders over a language model's training checkpoints.

A thin helper package behind the numbered notebooks: configuration (:mod:`saetrack.config`), the offline
corpus and nano model suite, checkpoint loading, the activation cache, the SAE chain, and the analyses and
figures of *Tracking the Feature Dynamics in LLM Training: A Mechanistic Study* (arXiv 2412.17626).
"""

__version__ = "0.1.0"

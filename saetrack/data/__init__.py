"""Data sources: the corpus and its tokens, the nano model suite trained here, checkpoint sources (a local folder of
``step{N}`` checkpoints or a Hub repo with ``step{N}`` revisions) and the activations read at the hooked layer.
"""

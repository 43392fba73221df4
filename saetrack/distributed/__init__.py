"""Work spread over the ranks of a ``torchrun`` job: which rank this process is (:mod:`~saetrack.distributed.ranks`)
and one SAE trained data-parallel over all of them (:mod:`~saetrack.distributed.data_parallel`)."""

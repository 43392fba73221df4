"""The pipeline's machinery, apart from the stages themselves: the stage skeleton (manifests, atomic folders,
skip-when-current), the declared stages and their runner, and running several pipelines in parallel."""

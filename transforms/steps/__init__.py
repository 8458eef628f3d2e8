"""The import's steps without Beam: what the Beam composites of `transforms`
wrap and the in-process engine calls directly. Nothing here imports Beam."""

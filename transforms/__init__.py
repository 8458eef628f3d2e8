"""The import's steps: Beam composites, and beside them the Beam-free work
of each step (`decisions`, `check_lines`, `apply_bucket`, `reject_files`,
`finalize`), which the composites wrap and the in-process run calls directly."""

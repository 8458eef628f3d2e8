"""The import's steps. At the top, the Beam composites, each module named after
the PTransform it holds: `number_splits`, `hash_inputs`, `decide_inputs`,
`parse_commands`, `apply_commands`, `write_rejects`, `commit_import`, and
`import_profiles` (the whole import as one composite, for one's own pipeline).

`steps/` holds the Beam-free work those composites wrap, which the in-process
engine calls directly: `check_lines`, `batches` (the input-order rule),
`apply_bucket`, `decisions`, `reject_files`, `count_files`, `change_files`,
`finalize`, and what they share (`outputs`, `metrics`, `progress`, `scratch`, `gc_pause`)."""

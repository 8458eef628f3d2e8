"""Pipeline builders: construct a pipeline from a job description, never run it."""

"""Import inputs: finding them, fingerprinting them, and reading their lines.

No Beam here either: `plan` runs in the launcher before the pipeline starts,
`lines` runs inside the read transform on the workers.
"""

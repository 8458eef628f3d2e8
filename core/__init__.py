"""The semantics of a profile import, with no Beam in sight.

Everything that decides what happens to a line or a profile lives here, as
small pure modules that can be read and tested on their own:

- `codes`: the stable reject codes and their precedence (SPEC §3).
- `identifiers`: the one identifier of a command and its canonical key.
- `commands`: checking one raw line into a command or a reject.
- `merge`: replace, shallow merge and deep merge of profiles (SPEC §2).
- `fold`: applying one identifier's commands in order to its stored profile.
- `records`: how a stored profile is encoded in the store.
- `report`: the counts and the run report (SPEC §4).

The Beam transforms in `profile_import.transforms` only wire these together.
"""

"""`python -m profile_import`: the same command as `profile-import`."""

import sys

from profile_import.runners.cli import main

if __name__ == "__main__":
    sys.exit(main())

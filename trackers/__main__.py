"""``python -m trackers ...`` is the same as the ``trackers`` command."""
import sys

from trackers.cli import main

if __name__ == "__main__":
    sys.exit(main())

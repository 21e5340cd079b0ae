"""``python -m loadtest SCENARIO [options]``: the same as ``hearth loadtest``."""

import sys

from loadtest.cli import main

sys.exit(main())

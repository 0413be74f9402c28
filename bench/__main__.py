"""``python -m bench [--smoke] [--json PATH] [--all-versions]``."""

import sys

from bench.run import main

sys.exit(main())

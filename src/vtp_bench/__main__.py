"""``python -m vtp_bench``: the command line, as ``vtp-bench``."""

import sys

from vtp_bench.cli import main

sys.exit(main())

"""`python -m svrl ...` runs the `svrl` command (what subprocess launches and torchrun use)."""

import sys

from svrl.cli import main

sys.exit(main())

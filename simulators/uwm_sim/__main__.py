"""`python -m uwm_sim` is `uwm-sim`."""

import sys

from .cli import main

sys.exit(main())

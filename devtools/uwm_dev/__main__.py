"""`python -m uwm_dev` is `uwm-dev`."""

import sys

from .cli import main

sys.exit(main())

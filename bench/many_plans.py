#!/usr/bin/env python3
"""Many plans at once, one operator (devtools/uwm_dev/bench/many.py); ends with a JSON line
{"plans", "median_ratio", "p95_ratio", "baseline_ratio", "rss_mb", "writes_per_step", ...}.

    .venv/bin/python bench/many_plans.py --plans 100
    .venv/bin/python bench/many_plans.py --plans 20 --per-fleet 5
"""

import sys

from uwm_dev.bench.many import main

if __name__ == "__main__":
    sys.exit(main())

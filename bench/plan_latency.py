#!/usr/bin/env python3
"""One plan against the critical path the servers impose (devtools/uwm_dev/bench/latency.py); ends with a
JSON line {"wall_s", "critical_path_s", "ratio", "writes_per_step", "reaction_ms", ...}.

    .venv/bin/python bench/plan_latency.py                     # the demo estate, 1 s delays
    .venv/bin/python bench/plan_latency.py --max-concurrent 3
    .venv/bin/python bench/plan_latency.py --fleet FILE --plan FILE
"""

import sys

from uwm_dev.bench.latency import main

if __name__ == "__main__":
    sys.exit(main())

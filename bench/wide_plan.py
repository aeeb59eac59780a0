#!/usr/bin/env python3
"""One plan of many Personalization Servers (devtools/uwm_dev/bench/wide.py); ends with a JSON line
{"ratio", "wall_s", "critical_path_s", "writes_per_step", "servers", "max_concurrent", "status_bytes", ...}.

    .venv/bin/python bench/wide_plan.py                          # 200 servers, maxConcurrentServers 50
    .venv/bin/python bench/wide_plan.py --servers 60 --max-concurrent 20
"""

import sys

from uwm_dev.bench.wide import main

if __name__ == "__main__":
    sys.exit(main())

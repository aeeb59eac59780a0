#!/usr/bin/env python3
"""The API server's CPU per status write, by plan size (devtools/uwm_dev/bench/status_writes.py); ends with
a JSON line {"sizes": [{"servers", "apiserver_cpu_ms_per_write", "wall_ms_per_write"}, ...]}.

    .venv/bin/python bench/status_writes.py
    .venv/bin/python bench/status_writes.py --servers 200 --writes 500
"""

import sys

from uwm_dev.bench.status_writes import main

if __name__ == "__main__":
    sys.exit(main())

"""The benches' CPU accounting (`uwm_dev/bench/cpu.py`): a busy process is counted, an idle one is not,
and a child that ended is counted with the parent that waited for it (PostgreSQL's backends)."""

from __future__ import annotations

import os
import subprocess
import sys

from uwm_dev.bench.cpu import CpuMeter, children, cpu_seconds

SPIN = "end = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
# a process that waits for a line, spins 0.6 CPU-seconds, says so, and waits again (until EOF)
BUSY = f"import sys, time\nsys.stdin.readline()\n{SPIN}print('done', flush=True)\nsys.stdin.read()\n"


def test_a_busy_process_is_counted_and_an_idle_one_is_not() -> None:
    busy = subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    idle = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    assert busy.stdin is not None and busy.stdout is not None
    try:
        meter = CpuMeter({"busy": lambda: [busy.pid], "idle": lambda: [idle.pid]})
        meter.start()
        busy.stdin.write(b"go\n")
        busy.stdin.flush()
        assert busy.stdout.readline() == b"done\n"
        seconds = meter.seconds()
        assert seconds["busy"] >= 0.5 and seconds["idle"] < 0.3, seconds
    finally:
        for proc in (busy, idle):
            proc.kill()
            proc.wait()


def test_a_child_that_ended_counts_for_the_parent_that_waited_for_it() -> None:
    me = os.getpid()
    before, own = cpu_seconds(me, reaped=True), cpu_seconds(me)
    subprocess.run([sys.executable, "-c", f"import time\n{SPIN}"], check=True)
    assert cpu_seconds(me, reaped=True) - before >= 0.5
    assert cpu_seconds(me) - own < 0.5  # its own time alone does not count the child's
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert sleeper.pid in children(me)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cpu_seconds(2**22 + 12345) == 0.0  # a process that is not there

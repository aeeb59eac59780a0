"""A checkout in a private folder (`mktemp -d` makes it 0700) is out of reach of the `postgres` user that
PostgreSQL runs as when the tests run as root: the test bed keeps the cluster in a folder of its own
(under /var/tmp) that the checkout's `.testbed/.../pg` links to, instead of refusing to start."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from uwm_dev.testbed import postgres

pytestmark = pytest.mark.testbed


@pytest.mark.skipif(os.geteuid() != 0, reason="only as root does PostgreSQL run as another user (postgres)")
def test_a_cluster_under_a_private_folder_lives_where_postgres_can_reach_it(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o700)
    base = private / "checkout" / ".testbed" / "pg"
    server = postgres.start(base)
    try:
        assert base.is_symlink() and base.resolve().parent == postgres.FALLBACK_ROOT
        assert server.data == base.resolve() / "data" and postgres.running(server.data)
        postgres.stop(server.data)
        again = postgres.start(base, port=server.port)  # a restart finds the same cluster through the link
        assert again.data == server.data and postgres.running(again.data)
    finally:
        postgres.stop(server.data)
        shutil.rmtree(base.resolve(), ignore_errors=True)

"""Smoke: the acceptance fleet starts and its status pages answer at the guide's paths."""

from __future__ import annotations

from typing import Any

import pytest

from uwm_sim.fleet import running_fleet

pytest_plugins = ["sim_fixtures"]


@pytest.mark.integration
async def test_fleet_starts_and_status_pages_answer(estate: Any) -> None:
    async with running_fleet(estate()) as fleet:
        assert set(fleet.servers) == {"ms-1", "ms-2", "ps-1", "ps-2", "ps-3"}
        for name, ep in fleet.servers.items():
            async with fleet.client(name) as c:
                page = await c.status_page(ep.kind)
                assert page.status == 200, page.text
                assert "Connection successful" in page.text
                st = await c.state()
                assert st.status == 200, st.text

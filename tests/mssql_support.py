"""A SQL Server in a container (testcontainers) for the tests of the SQL Server path.

Wherever no SQL Server ODBC driver is installed or no Docker engine answers, the fixture skips the test
and says which of the two is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyodbc
import pytest

PASSWORD = "Uwm-Mssql-Test-1!"


def sql_server_driver() -> str | None:
    for wanted in ("ODBC Driver 18 for SQL Server", "ODBC Driver 17 for SQL Server", "FreeTDS"):
        if wanted in pyodbc.drivers():
            return wanted
    return None


def sql_server() -> Iterator[str]:
    """Yield an ODBC connection string (without DATABASE=) of a fresh SQL Server, or skip."""
    driver = sql_server_driver()
    if driver is None:
        pytest.skip("no SQL Server ODBC driver (msodbcsql18 or FreeTDS) is installed")
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers, so no SQL Server container: {type(exc).__name__}")
    from testcontainers.community.mssql import SqlServerContainer

    image = os.environ.get("UWM_MSSQL_IMAGE", "mcr.microsoft.com/mssql/server:2022-latest")
    with SqlServerContainer(image, password=PASSWORD) as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(1433)
        if driver == "FreeTDS":
            yield f"DRIVER={{FreeTDS}};SERVER={host};PORT={port};UID=sa;PWD={PASSWORD};TDS_Version=7.4;"
        else:
            yield (f"DRIVER={{{driver}}};SERVER={host},{port};UID=sa;PWD={PASSWORD};"
                   "TrustServerCertificate=yes;Encrypt=no;")

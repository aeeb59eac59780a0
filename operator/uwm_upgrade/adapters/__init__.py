"""Adapters to the outside: Kubernetes API, the servers HTTP APIs, the databases (ODBC)."""

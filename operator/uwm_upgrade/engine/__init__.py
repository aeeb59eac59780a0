"""The reconciler: observe the estate through the adapters, ask the core what to do, do it, record it."""

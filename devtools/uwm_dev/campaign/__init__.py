"""The seeded failure campaign (`uwm-dev campaign`, `make campaign`): real processes, disrupted, audited."""

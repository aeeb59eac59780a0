"""A local, real Kubernetes control plane and PostgreSQL for tests and demos (envtest style)."""

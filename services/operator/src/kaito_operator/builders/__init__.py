"""Pure builders: typed SDK objects in, Kubernetes manifest dicts out."""

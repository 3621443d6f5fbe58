"""kaito-operator: kopf controllers for KAITO Workspaces and RAGEngines."""

__version__ = "0.1.0"

__all__ = ["__version__"]

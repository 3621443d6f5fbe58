"""kaito-ragengine: hybrid FAISS + BM25 retrieval and OpenAI-compatible RAG chat."""

from kaito_ragengine.app import create_app
from kaito_ragengine.settings import Settings

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app"]

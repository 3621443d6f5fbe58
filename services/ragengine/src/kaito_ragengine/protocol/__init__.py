"""Wire models of the RAG engine API (pydantic only; KAITO's JSON shapes)."""

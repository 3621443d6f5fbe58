"""Where the wire protocol meets the indexes, the embedder and the LLM."""

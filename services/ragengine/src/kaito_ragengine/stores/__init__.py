"""In-memory indexes (FAISS + BM25), chunking and on-disk snapshots."""

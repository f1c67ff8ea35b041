"""RAG evaluation and SFT on your own Q&A pairs (issue 20): records and loaders, the embedded default data
(fieldkit.rag.facts), retrieval, Ragas-family metrics with an LLM judge, and reports. No Ray, no torch at import."""

"""ProteinMTP: protein Cα–Cα distance matrices from a causal LLM with a pairwise head."""

__version__ = "0.1.0"

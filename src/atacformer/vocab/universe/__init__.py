"""Consensus region sets ("universes") built from a collection of region sets."""

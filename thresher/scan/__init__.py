"""Decode once, measure everything: decode, hashes, quality, embed, and the runner driving them."""

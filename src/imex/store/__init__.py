"""Blob store: where instance bytes live, addressed by their SHA-256."""

from imex.store.filesystem import BlobStore

__all__ = ["BlobStore"]

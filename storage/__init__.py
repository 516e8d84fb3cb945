"""The shared fact/entity store: SQL is the source of truth, the vector index is derived.

Nothing in this package imports `clara` or `plugins`; callers build a `StoreConfig` and open a
`FactStore` with it.
"""

from storage.errors import FactNotFound, InvalidInput, ScopeDenied, StoreError
from storage.store import FactStore, StoreConfig
from storage.types import BatchResult, Fact, FactKind, FactStatus, RecallHit, ScopeKind

__all__ = [
    "BatchResult",
    "Fact",
    "FactKind",
    "FactNotFound",
    "FactStatus",
    "FactStore",
    "InvalidInput",
    "RecallHit",
    "ScopeDenied",
    "ScopeKind",
    "StoreConfig",
    "StoreError",
]

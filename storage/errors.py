"""Errors raised by the store. Every one carries a message fit to show a user."""


class StoreError(Exception):
    """Base class for store errors."""


class InvalidInput(StoreError, ValueError):
    """The caller passed something the store will not write (empty, too long, binary, bad id)."""


class FactNotFound(StoreError, LookupError):
    """No fact with that id exists in the scopes the caller may see."""


class ScopeDenied(StoreError, PermissionError):
    """The acting principal may not read (or write) the named scope."""

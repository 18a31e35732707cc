"""The ``supervisor`` command: one command table, one module per command family, and the console.

Imports from every layer below; nothing below imports it."""

__all__: list[str] = []

"""The model: frozen attrs specs, YAML loading, fields, vars, the fast path, presets registry, validation.

Pure and synchronous: nothing here starts a process or opens a socket. Imports only the shared leaves."""

__all__: list[str] = []

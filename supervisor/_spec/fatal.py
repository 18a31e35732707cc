"""Output that says a restart cannot help: the built-in fatal patterns a service gets with
``builtin_fatal: true``. The plan shows them, the supervision matches them."""

from __future__ import annotations

__all__ = ["BUILTIN_FATAL_PATTERNS"]

#: Output that says a restart cannot help. Matched line by line; each pattern names what went wrong.
BUILTIN_FATAL_PATTERNS: dict[str, str] = {
    "CUDA out of memory": (
        r"CUDA out of memory|CUDA error: out of memory|torch\.OutOfMemoryError|OutOfMemoryError: CUDA"
    ),
    "address already in use": r"[Aa]ddress already in use|EADDRINUSE",
    "model or tokenizer not found": (
        r"RepositoryNotFoundError|Repository Not Found|is not a valid model identifier"
        r"|Can't load tokenizer|does not appear to have a file named config\.json"
        r"|No such file or directory: '[^']*(?:config\.json|tokenizer[^']*)'"
    ),
    "NCCL error": r"NCCL error|ncclInternalError|ncclSystemError|ncclUnhandledCudaError|ncclInvalidUsage",
}

"""Output that says a restart cannot help: the built-in fatal patterns a service gets with
``builtin_fatal: true``. The plan shows them, the supervision matches them."""

from __future__ import annotations

__all__ = ["BUILTIN_FATAL_ALTERNATIVES", "BUILTIN_FATAL_PATTERNS"]

#: Output that says a restart cannot help, each as its alternatives. Matched line by line; each names what
#: went wrong. The supervision compiles every alternative alone: a regex engine finds a literal with a fast
#: scan, but tries an alternation at every position of the output's tail.
BUILTIN_FATAL_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "CUDA out of memory": (
        "CUDA out of memory",
        "CUDA error: out of memory",
        r"torch\.OutOfMemoryError",
        "OutOfMemoryError: CUDA",
    ),
    "address already in use": ("Address already in use", "address already in use", "EADDRINUSE"),
    "model or tokenizer not found": (
        "RepositoryNotFoundError",
        "Repository Not Found",
        "is not a valid model identifier",
        "Can't load tokenizer",
        r"does not appear to have a file named config\.json",
        r"No such file or directory: '[^']*(?:config\.json|tokenizer[^']*)'",
    ),
    "NCCL error": ("NCCL error", "ncclInternalError", "ncclSystemError", "ncclUnhandledCudaError", "ncclInvalidUsage"),
}

#: The same, one regex each: what a plan lists in a service's ``fatal``.
BUILTIN_FATAL_PATTERNS: dict[str, str] = {
    name: "|".join(alternatives) for name, alternatives in BUILTIN_FATAL_ALTERNATIVES.items()
}

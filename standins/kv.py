"""The etcd stand-in: an HTTP key-value store where workers register."""

from __future__ import annotations

import argparse
import asyncio

from ._http import HttpError, Request, Response, StreamResponse, json_response
from ._output import Log
from ._role import Role, require


class KvStore(Role):
    """etcd's part in Dynamo: workers register under ``workers/<role>/<port>``, the frontend lists them."""

    name = "kv"

    def __init__(self, args: argparse.Namespace, log: Log) -> None:
        super().__init__(args, log)
        self.data: dict[str, str] = {}

    async def startup(self) -> None:
        self.log.info("starting key-value store")
        await asyncio.sleep(max(0.0, self.args.load_seconds))
        self.mark_ready()

    def metric_lines(self) -> list[str]:
        return [
            "# HELP standin_kv_keys Keys currently stored.",
            "# TYPE standin_kv_keys gauge",
            f'standin_kv_keys{{role="kv"}} {len(self.data)}',
        ]

    async def route(self, request: Request) -> Response | StreamResponse:
        if request.path == "/v1/kv":
            require(request, "GET")
            self._count_operation()
            prefix = request.query.get("prefix", [""])[0]
            return json_response(200, {k: v for k, v in sorted(self.data.items()) if k.startswith(prefix)})
        if not request.path.startswith("/v1/kv/"):
            raise HttpError(404, f"no route for {request.path}")
        key = request.path[len("/v1/kv/") :]
        if not key:
            raise HttpError(400, "empty key")
        require(request, "GET", "PUT", "DELETE")
        self._count_operation()
        if request.method == "GET":
            if key not in self.data:
                raise HttpError(404, f"no such key {key!r}")
            return Response(200, self.data[key].encode(), "text/plain; charset=utf-8")
        if request.method == "PUT":
            try:
                value = request.body.decode("utf-8")
            except UnicodeDecodeError:
                raise HttpError(400, "value must be UTF-8 text") from None
            created = key not in self.data
            self.data[key] = value
            return json_response(200, {"key": key, "created": created})
        deleted = self.data.pop(key, None) is not None
        return json_response(200, {"key": key, "deleted": int(deleted)})

    def _count_operation(self) -> None:
        """Counts a kv operation; like a starting etcd, answers 503 until ready."""
        self.requests_total += 1
        if not self.ready.is_set():
            raise HttpError(503, "key-value store is still starting")

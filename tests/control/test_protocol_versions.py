"""A run that speaks a newer control protocol: ``supervisor status`` and ``attach`` say so in one line
(which run, both versions, which ``supervisor`` talks to it), never a traceback or a KeyError.

The run is a real process listening on the run's control socket and answering as a newer topovisor
would; its records are of this version (only the protocol is newer).
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

import supervisor as sv
from supervisor._control.protocol import PROTOCOL_VERSION, socket_path
from supervisor._records.record import register_run

from ..fakerun import Reaper, write_run
from ..helpers import PYTHON, supervisor_cli

NEWER = PROTOCOL_VERSION + 1
#: answers every request on the socket at argv[1] with the line argv[2] (a run of a newer topovisor)
NEWER_RUN = (
    "import os, socket, sys\n"
    "server = socket.socket(socket.AF_UNIX)\n"
    "os.chdir(os.path.dirname(sys.argv[1]))  # a test's run dir is too deep for a socket address\n"
    "server.bind(os.path.basename(sys.argv[1])); server.listen(8)\n"
    "print('up', flush=True)\n"
    "for _ in range(1000):\n"
    "    client, _ = server.accept()\n"
    "    with client:\n"
    "        client.makefile('rb').readline()\n"
    "        client.sendall(sys.argv[2].encode() + b'\\n')\n"
)
ANSWERS = {
    "a reply of a newer version": {"v": NEWER, "id": 1, "ok": True, "status": {"phase": "running"}},
    "a refusal of our version": {
        "v": NEWER,
        "id": 1,
        "ok": False,
        "error": f"unsupported protocol version {PROTOCOL_VERSION}; this run speaks v{NEWER}",
        "versions": [NEWER],
    },
}


def newer_run(reaper: Reaper, runs_dir: Path, answer: dict[str, object]) -> tuple[str, Path]:
    run_id = "20250101-000000-newer-ccc333"
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True, mode=0o700)
    server = reaper.start([PYTHON, "-c", NEWER_RUN, str(socket_path(run_dir)), json.dumps(answer)])
    me = psutil.Process(server.pid)
    write_run(runs_dir, run_id, {}, supervisor=(me.pid, me.create_time()), name="newer")
    register_run(run_id, run_dir, supervisor_pid=server.pid)
    return run_id, run_dir


@pytest.mark.parametrize("answer", list(ANSWERS.values()), ids=list(ANSWERS))
def test_status_of_a_run_that_speaks_a_newer_protocol_says_so(
    reaper: Reaper, runs_dir: Path, answer: dict[str, object]
) -> None:
    """One line on stderr, exit 1."""
    run_id, _ = newer_run(reaper, runs_dir, answer)
    result = supervisor_cli("status", run_id)
    assert result.returncode == 1, (result.stdout, result.stderr)
    expected = (
        f"run {run_id} speaks control protocol version {NEWER}; this topovisor speaks version {PROTOCOL_VERSION}: "
        "use that version's `supervisor` to talk to it"
    )
    assert result.stderr.strip() == f"supervisor: {expected}"


@pytest.mark.anyio
async def test_attach_to_a_run_that_speaks_a_newer_protocol_raises_incompatible_version(
    reaper: Reaper, runs_dir: Path
) -> None:
    """The library's client says the same, as ``IncompatibleVersion`` (a ``SupervisorError``)."""
    run_id, run_dir = newer_run(reaper, runs_dir, ANSWERS["a reply of a newer version"])
    with pytest.raises(sv.IncompatibleVersion, match=f"run {run_id} speaks control protocol version {NEWER}"):
        async with sv.attach(run_dir):
            pass

"""Which cgroups a run can use, read from /proc/self/mountinfo and /proc/self/cgroup (fake layouts of the
usual hosts: systemd's unified one, the hybrid one of this machine kind, a container's namespace), and the
cgroup tree's own operations on this machine's real cgroups."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from supervisor._host.cgroupfs import CgroupHost, read_small_file
from supervisor._host.containment import (
    ContainmentUnavailable,
    RunContainment,
    populated,
    remove_tree,
    tree_pids,
    warm_moves,
)

from ..helpers import alive, wait_until

SYSTEMD_MOUNTINFO = """\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
SYSTEMD_CGROUP = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope\n"

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = "6:freezer:/\n4:memory:/process_api/72cc\n1:cpu:/\n0::/\n"


def test_a_systemd_host_has_the_unified_hierarchy_at_sys_fs_cgroup_and_our_scope_in_it() -> None:
    host = CgroupHost.read(mountinfo=SYSTEMD_MOUNTINFO, cgroup=SYSTEMD_CGROUP)
    assert host.unified is not None and host.v1 == {}
    assert host.unified.own_dir == Path(
        "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope"
    )
    assert not host.unified.read_only


def test_a_hybrid_host_has_v1_controllers_by_name_and_v2_at_unified() -> None:
    host = CgroupHost.read(mountinfo=HYBRID_MOUNTINFO, cgroup=HYBRID_CGROUP)
    assert host.unified is not None and host.unified.own_dir == Path("/sys/fs/cgroup/unified")
    assert set(host.v1) == {"cpu", "memory", "freezer"}
    assert host.v1["memory"].own_dir == Path("/sys/fs/cgroup/memory/process_api/72cc")
    assert host.v1["freezer"].own_dir == Path("/sys/fs/cgroup/freezer")


def test_a_bind_mounted_subtree_and_a_read_only_mount_are_read_as_such() -> None:
    mountinfo = "50 40 0:30 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n"
    host = CgroupHost.read(mountinfo=mountinfo, cgroup="0::/docker/abc/inner\n")
    assert host.unified is not None and host.unified.read_only
    assert host.unified.own_dir == Path("/sys/fs/cgroup/inner")
    assert "read-only" in (host.unified.why_unusable(procs_file="cgroup.procs") or "")


def test_no_cgroup_filesystem_means_marks_and_says_why_for_each_mode() -> None:
    host = CgroupHost.read(mountinfo="22 1 0:21 / /sys rw - sysfs sysfs rw\n", cgroup="0::/\n")
    assert host.unified is None
    contained = RunContainment.open("r1", "auto", host=host)
    assert contained.mode == "marks" and contained.path is None
    assert set(contained.why_not) == {"cgroup2", "freezer"}
    with pytest.raises(ContainmentUnavailable) as caught:
        RunContainment.open("r1", "cgroup2", host=host)
    assert "no cgroup v2 hierarchy is mounted" in str(caught.value) and "Delegate=yes" in str(caught.value)


def test_mode_marks_makes_nothing_and_starts_argv_as_is() -> None:
    contained = RunContainment.open("r1", "marks")
    assert contained.replica("app") is None
    assert contained.enter("app", ["sleep", "1"], {}, None) == ["sleep", "1"]
    assert contained.record() == {"containment": "marks", "cgroup": None, "cgroup_extras": []}


def _real(mode: str) -> RunContainment:
    try:
        return RunContainment.open(f"test-{os.getpid()}-{mode}", mode)
    except ContainmentUnavailable as exc:
        pytest.skip(f"{mode} is not available here: {exc.why}")


@pytest.mark.parametrize("mode", ["cgroup2", "freezer"])
def test_a_replica_is_in_its_cgroup_before_its_program_runs_and_the_tree_is_killed_and_removed(mode: str) -> None:
    contained = _real(mode)
    assert contained.path is not None
    try:
        # the program reads its own cgroup at its first instruction: it must already be the replica's
        argv = contained.enter(
            "app.0", [sys.executable, "-c", "print(open('/proc/self/cgroup').read())"], os.environ, None
        )
        seen = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert f"/{contained.path.name}/app.0" in seen
        # a setsid'd, env-scrubbed grandchild stays in the tree and dies with it
        argv = contained.enter("app.1", ["setsid", "env", "-i", "sleep", "300"], os.environ, None)
        process = subprocess.Popen(argv)
        cgroup = contained.replica("app.1")
        assert cgroup is not None
        wait_until(lambda: cgroup.pids() != [], timeout=10)
        assert populated(contained.path) and tree_pids(contained.path) == cgroup.pids()
        assert contained.empty_and_remove()
        process.wait(10)
        assert not contained.path.exists() and not alive(process.pid)
    finally:
        contained.empty_and_remove()


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_a_program_named_like_an_option_runs_in_its_cgroup_whichever_shell_is_bin_sh(
    tmp_path: Path, shell: str
) -> None:
    """``/bin/sh`` is dash on Debian, bash on RHEL: ``exec -x`` is an option to bash, ``exec -- -x`` a program
    named ``--`` to dash. The entry wrapper runs under each as ``/bin/sh`` would."""
    program = tmp_path / "-prog"
    program.write_text('#!/bin/sh\necho "ran $0 $1"; cat /proc/self/cgroup\n')
    program.chmod(0o755)
    found = shutil.which(shell)
    assert found is not None, f"{shell} is part of every Debian and RHEL install this test runs on"
    contained = _real("cgroup2")
    assert contained.path is not None
    try:
        env = {"PATH": f"{tmp_path}:/bin:/usr/bin"}
        argv = contained.enter("app", ["-prog", "arg"], env, None)
        assert argv[0] == "/bin/sh"
        seen = subprocess.run([found, *argv[1:]], capture_output=True, text=True, env=env, check=True, timeout=30)
        assert seen.stdout.startswith("ran ") and " arg\n" in seen.stdout, seen
        assert f"/{contained.path.name}/app" in seen.stdout
    finally:
        contained.empty_and_remove()


def test_a_program_that_cannot_be_run_is_refused_as_popen_refuses_it(tmp_path: Path) -> None:
    contained = _real("cgroup2")
    try:
        with pytest.raises(FileNotFoundError):
            contained.enter("app", ["no-such-program-here"], {"PATH": str(tmp_path)}, None)
        script = tmp_path / "not-executable"
        script.write_text("#!/bin/sh\n")
        with pytest.raises(PermissionError):
            contained.enter("app", [str(script)], {}, None)
        assert contained.enter("app", ["sh"], {"PATH": "/bin:/usr/bin"}, None)[0] == "/bin/sh"
    finally:
        contained.empty_and_remove()


def test_remove_tree_of_a_path_that_is_gone_is_done(tmp_path: Path) -> None:
    assert remove_tree(tmp_path / "never-made")
    assert not populated(tmp_path / "never-made")


def test_the_move_warm_up_moves_us_nowhere_and_stops_when_told() -> None:
    """It writes this process into the cgroup it is in (a no-op that readies the kernel's move lock)."""
    before = Path("/proc/self/cgroup").read_text()
    host = CgroupHost.read()
    hierarchy = host.unified or host.v1.get("freezer")
    if hierarchy is None or hierarchy.why_unusable(procs_file="cgroup.procs") is not None:
        pytest.skip("no writable cgroup here: the warm-up does nothing")
    stop = warm_moves(host)
    warming = [t for t in threading.enumerate() if t.name == "topovisor cgroup warm-up"]
    assert len(warming) == 1
    stop()
    warming[0].join(10)
    assert not warming[0].is_alive()
    assert Path("/proc/self/cgroup").read_text() == before


@pytest.mark.parametrize("mode", ["cgroup2", "freezer"])
@pytest.mark.parametrize("name", ["tasks", "notify_on_release"])
def test_a_replica_named_like_a_v1_control_file_still_gets_a_cgroup_of_its_own(mode: str, name: str) -> None:
    """A v1 cgroup holds files named ``tasks`` and ``notify_on_release`` (the freezer's, and the memory one
    a hybrid host measures in): a service of that name is contained, and found under its own name."""
    from supervisor._records.leftovers import _replica_of

    contained = _real(mode)
    assert contained.path is not None
    try:
        argv = contained.enter(name, ["sleep", "300"], os.environ, None)
        process = subprocess.Popen(argv, stderr=subprocess.PIPE)
        cgroup = contained.replica(name)
        assert cgroup is not None
        wait_until(lambda: cgroup.pids() == [process.pid] or process.poll() is not None, timeout=10)
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        assert _replica_of(contained.path, process.pid) == name
        assert contained.empty_and_remove()
        process.communicate(timeout=10)
    finally:
        contained.empty_and_remove()


@pytest.mark.parametrize(
    "content",
    [b"echo ran as a shell script\n", b"", b"#!\n", b"#!/no/such/interpreter -u\nprint('ran')\n"],
    ids=["no-shebang", "empty", "bare-shebang", "missing-interpreter"],
)
def test_a_program_exec_refuses_is_refused_before_the_shell_would_run_it(tmp_path: Path, content: bytes) -> None:
    """``sh``'s exec runs a file the kernel refuses (ENOEXEC) as a shell script, and says 'not found' with
    exit 127 for a missing interpreter: the replica is refused as ``Popen`` refuses it, at once."""
    contained = _real("cgroup2")
    program = tmp_path / "serve"
    program.write_bytes(content)
    program.chmod(0o755)
    with pytest.raises(OSError) as popen:
        subprocess.run([str(program)], check=False)
    try:
        for argv, cwd in (([str(program)], None), (["./serve"], str(tmp_path)), (["serve"], None)):
            with pytest.raises(OSError) as caught:
                contained.enter("app", argv, {"PATH": str(tmp_path)}, cwd)
            assert (type(caught.value), caught.value.errno) == (type(popen.value), popen.value.errno)
            assert caught.value.strerror == popen.value.strerror and caught.value.filename == argv[0]
    finally:
        contained.empty_and_remove()


def test_a_relative_path_entry_is_searched_from_the_replicas_directory_as_popen_does(tmp_path: Path) -> None:
    """``PATH=node_modules/.bin:...`` with ``cwd:``: ``Popen`` (and ``sh``) search it from the replica's
    directory, so the check before the shell finds the program there too (not from the supervisor's)."""
    contained = _real("cgroup2")
    (tmp_path / "bin").mkdir()
    program = tmp_path / "bin" / "serve"
    program.write_text("#!/bin/sh\necho served\n")
    program.chmod(0o755)
    env = {"PATH": "bin:/bin:/usr/bin"}
    assert subprocess.run(["serve"], env=env, cwd=tmp_path, capture_output=True).stdout == b"served\n"
    try:
        argv = contained.enter("app", ["serve"], env, str(tmp_path))
        assert subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True).stdout == b"served\n"
    finally:
        contained.empty_and_remove()


@pytest.mark.parametrize("size", [0, 100, 4095, 4096, 4097, 65536 + 4096, 200_000])
def test_a_small_file_is_read_whole_at_any_size(tmp_path: Path, size: int) -> None:
    """The raw read the sampler uses stops at a short read: every size around its read lengths comes whole."""
    path = tmp_path / "counter"
    data = bytes(index % 251 for index in range(size))
    path.write_bytes(data)
    assert read_small_file(path) == data
    assert read_small_file("/proc/self/stat").split()[0] == str(os.getpid()).encode()

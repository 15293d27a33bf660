"""Shared fixtures for the rclpy tests.

Every test that touches DDS leases its own ROS_DOMAIN_ID from the same pool
the Rust tests use (lock files in $CNCPICK_DOMAIN_LEASE_DIR or
/tmp/cncpick-ros-domains, ids 100..232), so the suites can run side by side.
"""

import fcntl
import json
import os
import pathlib
import queue
import signal
import subprocess
import tempfile
import threading
import time
import warnings

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "test" / "fixtures"
DOMAINS = range(100, 233)


def bin_path(name):
    d = os.environ.get("CNCPICK_BIN_DIR", str(REPO / "target" / "debug"))
    p = pathlib.Path(d) / name
    if not p.exists():
        pytest.fail(f"{p} is missing: build with cargo build (./cncpick test does)")
    return p


@pytest.fixture
def domain_id():
    lease_dir = pathlib.Path(
        os.environ.get("CNCPICK_DOMAIN_LEASE_DIR", pathlib.Path(tempfile.gettempdir()) / "cncpick-ros-domains")
    )
    lease_dir.mkdir(parents=True, exist_ok=True)
    start = os.getpid() % len(DOMAINS)
    for k in range(len(DOMAINS)):
        d = DOMAINS[(start + k) % len(DOMAINS)]
        f = open(lease_dir / f"{d}.lock", "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        try:
            yield d
        finally:
            f.close()
        return
    pytest.fail(f"every test ROS domain id is leased (lock files in {lease_dir})")


@pytest.fixture
def rclpy_node(domain_id):
    """An rclpy context and node on the test's own domain."""
    import rclpy

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node("pytest_peer", context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        # Node.destroy_node leaves action clients, which hold the node.
        for w in list(node.waitables):
            if hasattr(w, "destroy"):
                w.destroy()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    # Fast DDS destroys the participant with the context's last node; one
    # that outlives the test keeps the shared-memory files of every later
    # peer on this domain. A live participant holds the lock files (`_el`)
    # of its own segment and ports open; a peer's segment, even a killed
    # one's, may stay mapped here, which holds nothing.
    locks = shm_files_open_by(os.getpid())
    if locks:
        pytest.fail(
            "the test's rclpy participant outlived it (a node, action client or lifecycle state machine "
            f"was not destroyed); it still holds {sorted(locks)}"
        )


class Process:
    """A child process whose stdout JSON lines are collected on a thread."""

    def __init__(self, args, domain_id, env=None):
        env = dict(os.environ, **(env or {}), ROS_DOMAIN_ID=str(domain_id))
        self.proc = subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            # Its own process group, which the processes it starts join: a
            # test that fails leaves none of them behind (see spawn).
            start_new_session=True,
        )
        self.lines = queue.Queue()
        self.stderr = []
        self.pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True),
        ]
        for t in self.pumps:
            t.start()

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line)

    def next_line(self, pred, timeout_s, spin=None):
        """The first output line for which pred(line) holds, within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if spin:
                spin()
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if pred(line):
                return line
        raise AssertionError(
            f"no matching line within {timeout_s} s; exit={self.proc.poll()} stderr:\n" + "".join(self.stderr)
        )

    def next_event(self, pred, timeout_s, spin=None):
        """The first JSON line for which pred(obj) holds, within timeout_s."""

        def matches(line):
            try:
                return pred(json.loads(line))
            except ValueError:
                return False

        return json.loads(self.next_line(matches, timeout_s, spin))

    def wait(self, timeout_s):
        """Waits for exit and for all of its output; returns the exit code."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for t in self.pumps:
            t.join(timeout=5)
        return code

    def terminate(self, timeout_s=10):
        """SIGTERM, as ros2 launch stops a node; returns the exit code."""
        self.proc.terminate()
        return self.wait(timeout_s)

    def close(self, timeout_s=10):
        """Closes stdin (the probe's signal to stop) and waits for the exit code."""
        if self.proc.stdin:
            self.proc.stdin.close()
        return self.wait(timeout_s)


@pytest.fixture
def spawn(domain_id):
    procs = []

    def start(args, env=None):
        p = Process(args, domain_id, env)
        procs.append(p)
        return p

    yield start
    # SIGTERM first, as ros2 launch does, so a failed test does not leave
    # Fast DDS shared-memory files behind for the next one; then SIGKILL.
    for p in procs:
        if p.proc.poll() is None:
            p.proc.terminate()
    # A loaded CI machine can take a while; a kill is reported, since it
    # leaves the process's shared-memory files behind.
    for p in procs:
        try:
            p.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()
            warnings.warn(f"{p.proc.args[0]} did not stop within 30 s of SIGTERM; killed")
    # What they started and left running (a cell's node processes, when its
    # supervisor was killed) would go on in this domain and upset the tests
    # after this one: killed, and reported.
    for p in procs:
        try:
            os.killpg(p.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        warnings.warn(f"{p.proc.args[0]} left processes of its group running; killed them")


def resume_player(executor, node, timeout_s=10.0):
    """Resumes a `cncpick play --start-paused`; whether it resumed.

    resume is not idempotent (sent again, it answers success=False: not
    paused). When its answer is lost, is_paused, which is idempotent, says
    whether it was carried out."""
    from std_srvs.srv import Trigger

    is_paused = node.create_client(Trigger, "/cncpick_player/is_paused")
    resume = node.create_client(Trigger, "/cncpick_player/resume")

    def resumed():
        return not call_service(executor, is_paused, Trigger.Request(), resend_after_s=2.0).success

    answer = call_once(executor, resume, Trigger.Request(), resumed, timeout_s)
    return answer is None or answer.success


def call_once(executor, client, request, carried_out, timeout_s=10.0):
    """Calls a service that must not be carried out twice; its response, or
    None if the response was lost but carried_out() says the call was.

    A lost response (see call_service) is not taken as a lost request: the
    request is sent again only when carried_out() says it was not."""
    name = client.srv_name
    assert spin_until(executor, client.service_is_ready, 30), f"{name} never appeared"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        future = client.call_async(request)
        if spin_until(executor, future.done, 2.0):
            return future.result()
        client.remove_pending_request(future)
        if carried_out():
            return None
    raise AssertionError(f"{name} did not answer within {timeout_s} s")


def spin_until(executor, done, timeout_s):
    """Spins until done() holds or timeout_s passes; returns done()."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return done()


def call_service(executor, client, request, timeout_s=10.0, resend_after_s=None):
    """Calls a service and returns its response, or fails the test naming it.

    service_is_ready() only says our request reaches the server. Under load,
    Fast DDS can send the first response before the server has matched our
    response reader, and that response is lost. For an idempotent request pass
    resend_after_s: the request is sent again whenever that long passes without
    an answer, all within timeout_s.
    """
    name = client.srv_name
    assert spin_until(executor, client.service_is_ready, 30), f"{name} never appeared"
    deadline = time.monotonic() + timeout_s
    while True:
        future = client.call_async(request)
        attempt_s = deadline - time.monotonic()
        if resend_after_s is not None:
            attempt_s = min(attempt_s, resend_after_s)
        if spin_until(executor, future.done, max(attempt_s, 0.0)):
            return future.result()
        client.remove_pending_request(future)
        assert time.monotonic() < deadline, f"{name} did not answer within {timeout_s} s"


def _shm_names():
    return {n for n in os.listdir("/dev/shm") if "fastrtps" in n}


def _shm_in_use():
    """Names in /dev/shm that some other live process has open or mapped.
    (This process's own DDS participants are shut down by then; Fast DDS
    may still keep a dead peer's segment mapped here, which is no use.)"""
    me = os.getpid()
    return {n for n, holders in _shm_holders(_shm_names()).items() if any(pid != me for pid, _ in holders)}


@pytest.fixture
def sweep_stale_shm():
    """For a test that kills a DDS process with SIGKILL: Fast DDS cannot
    remove that process's shared-memory files, so after everything else of
    the test is torn down, the files it created that no live process holds
    are removed (what `fastdds shm clean` does)."""
    before = _shm_names()
    yield
    for name in _shm_names() - before - _shm_in_use():
        try:
            os.unlink(f"/dev/shm/{name}")
        except OSError:
            pass


# Fast DDS files each test left behind, and who still maps them, for the
# summary at the end (scripts/test fails if any are left after the suite;
# this says which test left them).
_SHM_LEFT = {}


@pytest.fixture(autouse=True)
def _report_shm_left_behind(request):
    """Autouse, so it is set up first and torn down last, after every other
    fixture of the test (its processes, rclpy, any sweep) is gone."""
    before = _shm_names()
    yield
    left = _shm_names() - before
    if left:
        holders = _shm_holders(left)
        _SHM_LEFT[request.node.nodeid] = {n: holders.get(n, []) for n in sorted(left)}


def shm_files_open_by(pid):
    """The Fast DDS files in /dev/shm that process pid has open."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            # Closed since the listing (the listing's own fd, in this
            # process): not open.
            continue
        if target.startswith("/dev/shm/") and "fastrtps" in target:
            out.add(target[len("/dev/shm/") :].split()[0])
    return out


def _shm_holders(names):
    """For each name, the live processes (pid, command) that map or open it."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as maps:
                mapped = {line.split("/dev/shm/", 1)[1].split()[0] for line in maps if "/dev/shm/" in line}
            mapped |= shm_files_open_by(pid)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        for n in mapped & set(names):
            out.setdefault(n, []).append((int(pid), cmd[:120]))
    return out


def pytest_terminal_summary(terminalreporter):
    if not _SHM_LEFT:
        return
    terminalreporter.section("Fast DDS shared-memory files left behind")
    for test, files in _SHM_LEFT.items():
        terminalreporter.write_line(test)
        for name, holders in files.items():
            terminalreporter.write_line(f"  /dev/shm/{name}: " + ("; ".join(f"{pid} {cmd}" for pid, cmd in holders) or "no live process holds it"))

"""A node-kit lifecycle node (Rust, r2r) side by side with rclpy's own
LifecycleNode, driven by the same rclpy client: same answers, same states,
same available transitions, same transition events."""

import time

import pytest
from lifecycle_msgs.msg import TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetAvailableStates, GetAvailableTransitions, GetState
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from conftest import bin_path, call_service, spin_until

NS = "/cell"


class Client:
    """Calls the standard lifecycle services of node `fqn` from rclpy."""

    def __init__(self, node, executor, fqn, latched=False):
        """latched: hear the node's last transitions even if our subscription
        matched after they were published (our kit's transition_event is
        transient_local; rclpy's is not, so not for its nodes)."""
        self.executor = executor
        self.change = node.create_client(ChangeState, f"{fqn}/change_state")
        self.get = node.create_client(GetState, f"{fqn}/get_state")
        self.states = node.create_client(GetAvailableStates, f"{fqn}/get_available_states")
        self.available = node.create_client(GetAvailableTransitions, f"{fqn}/get_available_transitions")
        self.graph = node.create_client(GetAvailableTransitions, f"{fqn}/get_transition_graph")
        self.events = []
        self.event_sub = node.create_subscription(
            TransitionEvent,
            f"{fqn}/transition_event",
            lambda e: self.events.append((e.transition.id, e.transition.label, e.start_state.id, e.goal_state.id)),
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            if latched
            else 10,
        )

    def call(self, client, request):
        # Only change_state is not idempotent; the queries may be sent again.
        resend_after_s = None if client is self.change else 2.0
        return call_service(self.executor, client, request, resend_after_s=resend_after_s)

    # Where each transition leads when it succeeds.
    GOALS = {"configure": 2, "activate": 3, "deactivate": 2, "cleanup": 1, "shutdown": 4}

    def change_state(self, label, timeout_s=10.0):
        # Events are not latched: hear the node's publisher before causing any.
        assert spin_until(self.executor, lambda: self.event_sub.get_publisher_count() > 0, 30), "no transition_event"
        req = ChangeState.Request()
        req.transition.label = label
        assert spin_until(self.executor, self.change.service_is_ready, 30), f"{self.change.srv_name} never appeared"
        # A first answer can be lost (see call_service), and change_state is
        # not idempotent, so it is never sent twice: while no answer comes,
        # ask the node where it is; at the goal means it succeeded.
        future = self.change.call_async(req)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if spin_until(self.executor, future.done, 1.0):
                return future.result().success
            if label in self.GOALS and self.state()[0] == self.GOALS[label]:
                self.change.remove_pending_request(future)
                return True
        self.change.remove_pending_request(future)
        raise AssertionError(f"{self.change.srv_name} did not answer {label!r} within {timeout_s} s")

    def state(self):
        s = self.call(self.get, GetState.Request()).current_state
        return (s.id, s.label)

    def transitions(self, which):
        r = self.call(which, GetAvailableTransitions.Request())
        return [
            (t.transition.id, t.transition.label, t.start_state.id, t.start_state.label, t.goal_state.id, t.goal_state.label)
            for t in r.available_transitions
        ]

    def available_states(self):
        return [(s.id, s.label) for s in self.call(self.states, GetAvailableStates.Request()).available_states]

    def wait_events(self, n):
        assert spin_until(self.executor, lambda: len(self.events) >= n, 10), self.events
        return list(self.events)


def states_of(events):
    """(start, goal) state ids of transition events."""
    return [(start, goal) for _, _, start, goal in events]


class Reference(LifecycleNode):
    """rclpy's LifecycleNode, optionally failing one callback."""

    def __init__(self, name, context, fail_on=None, result=TransitionCallbackReturn.SUCCESS):
        self.fail_on, self.fail_result = fail_on, result
        super().__init__(name, namespace=NS, context=context)

    def _answer(self, which):
        return self.fail_result if which == self.fail_on else TransitionCallbackReturn.SUCCESS

    def on_configure(self, state):
        return self._answer("configure")

    def on_activate(self, state):
        return self._answer("activate")

    def on_deactivate(self, state):
        return self._answer("deactivate")

    def on_cleanup(self, state):
        return self._answer("cleanup")

    def on_shutdown(self, state):
        return self._answer("shutdown")

    def on_error(self, state):
        return TransitionCallbackReturn.SUCCESS


@pytest.fixture
def pair(spawn, rclpy_node):
    """Starts a kit node and an rclpy reference with the same failure plan."""
    node, executor = rclpy_node
    made = []

    def make(fail_on="", fail_mode="error"):
        k = len(made)
        rust_name, ref_name = f"kit_{k}", f"ref_{k}"
        args = [bin_path("kit_example"), "--ros-args", "-r", f"__node:={rust_name}", "-p", "heartbeat_period_s:=0.1"]
        if fail_on:
            args += ["-p", f"fail_on:={fail_on}", "-p", f"fail_mode:={fail_mode}"]
        proc = spawn(args)
        result = {"error": TransitionCallbackReturn.ERROR, "failure": TransitionCallbackReturn.FAILURE}[fail_mode]
        ref = Reference(ref_name, node.context, fail_on=fail_on or None, result=result)
        executor.add_node(ref)
        made.append((proc, ref))
        # Ours latched: seeing its publisher does not mean it has seen our
        # subscription yet, so a first event could be missed (the rclpy
        # reference shares our participant and matches at once).
        ours = Client(node, executor, f"{NS}/{rust_name}", latched=True)
        return proc, ours, Client(node, executor, f"{NS}/{ref_name}")

    yield make
    for proc, ref in made:
        assert proc.terminate() == 0, "".join(proc.stderr)
        executor.remove_node(ref)
        # rclpy's LifecycleNode.destroy_node leaves its state machine, which
        # holds the node, so the DDS participant outlived the test and kept
        # opening later tests' shared-memory ports.
        ref._state_machine.destroy_when_not_in_use()
        ref.destroy_node()


def test_the_whole_lifecycle_matches_rclpy_step_by_step(pair):
    _, ours, theirs = pair()
    assert ours.transitions(ours.graph) == theirs.transitions(theirs.graph)
    assert ours.available_states() == theirs.available_states()
    assert ours.state() == theirs.state() == (1, "unconfigured")

    # Valid and invalid requests interleaved; the answers are the ROS 2 design's.
    steps = ["activate", "configure", "configure", "activate", "cleanup", "deactivate", "cleanup", "shutdown", "configure"]
    expected = [False, True, False, True, False, True, True, True, False]
    answers = []
    for label in steps:
        a, b = ours.change_state(label), theirs.change_state(label)
        assert a == b, label
        answers.append(a)
        assert ours.state() == theirs.state(), label
        assert ours.transitions(ours.available) == theirs.transitions(theirs.available), label
    assert answers == expected
    assert ours.state() == (4, "finalized")
    assert ours.transitions(ours.available) == []

    # Two events per successful step: into the transition state, then out.
    n = 2 * sum(expected)
    assert states_of(ours.wait_events(n)) == states_of(theirs.wait_events(n))
    # rcl_lifecycle (so rclcpp and rclpy) leaves the event's transition field
    # empty; ours names the edge taken.
    assert [e[0] for e in ours.events] == [1, 10, 3, 30, 4, 40, 2, 20, 5, 50]


@pytest.mark.parametrize(
    "fail_on,fail_mode,final,n_events",
    [
        # configure (2 events), activate: 2->13, 13->15 (error), 15->1 (on_error ok)
        ("activate", "error", (1, "unconfigured"), 5),
        # configure: 1->10, 10->1 (failure): back where it was
        ("configure", "failure", (1, "unconfigured"), 2),
        # configure, activate (2 each), deactivate: 3->14, 14->3 (failure)
        ("deactivate", "failure", (3, "active"), 6),
    ],
)
def test_a_failing_callback_takes_the_same_path_as_in_rclpy(pair, fail_on, fail_mode, final, n_events):
    _, ours, theirs = pair(fail_on=fail_on, fail_mode=fail_mode)
    for label in ["configure", "activate", "deactivate"]:
        assert ours.change_state(label) == theirs.change_state(label), label
        assert ours.state() == theirs.state(), label
        if label == fail_on:
            break
    assert ours.state() == final
    assert states_of(ours.wait_events(n_events)) == states_of(theirs.wait_events(n_events))
    if fail_mode == "error":
        assert (32, "transition_error", 13, 15) in ours.events
        assert (60, "transition_success", 15, 1) in ours.events


def test_a_lifecycle_publisher_publishes_only_while_active(pair, rclpy_node):
    node, executor = rclpy_node
    _, ours, _ = pair()
    ticks = []
    node.create_subscription(String, f"{NS}/ticks", lambda m: ticks.append(m.data), 10)
    assert ours.change_state("configure")
    spin_until(executor, lambda: False, 1.0)
    assert ticks == [], "an inactive node published"
    assert ours.change_state("activate")
    assert spin_until(executor, lambda: len(ticks) >= 3, 10), "an active node did not publish"
    assert ours.change_state("deactivate")
    spin_until(executor, lambda: False, 0.3)  # drain what was in flight
    ticks.clear()
    spin_until(executor, lambda: False, 1.0)
    assert ticks == [], "a deactivated node published"


def test_heartbeats_and_diagnostics_report_the_lifecycle_state(pair, rclpy_node):
    from cncpick_msgs.msg import Heartbeat

    node, executor = rclpy_node
    _, ours, _ = pair()
    fqn = f"{NS}/kit_0"
    beats, diags = [], []
    node.create_subscription(Heartbeat, f"{NS}/heartbeat", lambda m: beats.append(m) if m.node == fqn else None, 10)
    node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: diags.extend(s for s in m.status if s.name == fqn), 10
    )
    assert spin_until(executor, lambda: beats and diags, 10)
    assert beats[-1].state == 1
    assert diags[-1].message == "unconfigured" and diags[-1].level == DiagnosticStatus.OK
    assert ours.change_state("configure")
    beats.clear()
    assert spin_until(executor, lambda: any(b.state == 2 for b in beats), 10)
    seqs = [b.seq for b in beats]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

"""Parameters of a kit node seen from outside: a bad params file stops the
node with an error naming the file and key; the parameters are real ROS
parameters, and an update that fails validation is refused through rclpy's
parameter services with the old value kept."""

import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters

from conftest import bin_path, call_service

FQN = "/cell/kit_example"


@pytest.mark.parametrize(
    "yaml_value,key,problem",
    [
        ("heartbeat_period_s: fast", "heartbeat_period_s", '"fast" is not a number'),
        ("tick_period_s: 20.0", "tick_period_s", "20.0 is outside its range [0.001, 10]"),
        ("tick_period: 0.5", "tick_period", "unknown parameter"),
        ("fail_on: [unclosed", "-", "not valid YAML"),
    ],
)
def test_a_bad_params_file_stops_the_node_naming_the_file_and_key(tmp_path, spawn, yaml_value, key, problem):
    f = tmp_path / "cell.yaml"
    f.write_text(f"/cell/kit_example:\n  ros__parameters:\n    {yaml_value}\n")
    p = spawn([bin_path("kit_example"), "--ros-args", "--params-file", f])
    assert p.wait(30) == 1
    stderr = "".join(p.stderr)
    assert f"kit_example: error: {f}: parameter {key}: {problem}" in stderr, stderr


class ParamClient:
    def __init__(self, node, executor):
        self.executor = executor
        self.get_c = node.create_client(GetParameters, f"{FQN}/get_parameters")
        self.set_c = node.create_client(SetParameters, f"{FQN}/set_parameters")
        self.list_c = node.create_client(ListParameters, f"{FQN}/list_parameters")

    def call(self, client, req):
        # Getting, listing and setting to a value are all idempotent.
        return call_service(self.executor, client, req, resend_after_s=2.0)

    def get(self, name):
        v = self.call(self.get_c, GetParameters.Request(names=[name])).values[0]
        return {ParameterType.PARAMETER_DOUBLE: v.double_value, ParameterType.PARAMETER_STRING: v.string_value}[v.type]

    def set_double(self, name, x):
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=x)
        r = self.call(self.set_c, SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
        return r.results[0]

    def names(self):
        return sorted(self.call(self.list_c, ListParameters.Request()).result.names)


@pytest.fixture
def running(tmp_path, spawn, rclpy_node):
    node, executor = rclpy_node
    f = tmp_path / "cell.yaml"
    f.write_text("/**:\n  ros__parameters:\n    heartbeat_period_s: 0.5\n")
    p = spawn([bin_path("kit_example"), "--ros-args", "--params-file", f, "-p", "tick_period_s:=0.25"])
    yield ParamClient(node, executor)
    assert p.terminate() == 0, "".join(p.stderr)


def test_parameters_are_declared_with_their_file_and_command_line_values(running):
    assert running.names() == [
        "fail_mode",
        "fail_on",
        "heartbeat_period_s",
        "peer_breaker_failures",
        "peer_breaker_open_s",
        "peer_service",
        "peer_timeout_s",
        "tick_period_s",
    ]
    assert running.get("heartbeat_period_s") == 0.5
    assert running.get("tick_period_s") == 0.25
    assert running.get("fail_mode") == "error"


def test_an_update_that_fails_validation_is_refused_and_the_old_value_stays(running):
    r = running.set_double("heartbeat_period_s", 0.0)
    assert not r.successful
    assert "outside its range [0.01, 60]" in r.reason
    assert running.get("heartbeat_period_s") == 0.5
    # Fine on its own, but ticks of 5 s would be more than 100 heartbeats.
    assert running.set_double("tick_period_s", 5.0).successful
    r = running.set_double("heartbeat_period_s", 0.01)
    assert not r.successful and "more than 100 heartbeats" in r.reason
    assert running.get("heartbeat_period_s") == 0.5


def test_a_valid_update_is_applied(running):
    r = running.set_double("heartbeat_period_s", 2.0)
    assert r.successful, r.reason
    assert running.get("heartbeat_period_s") == 2.0

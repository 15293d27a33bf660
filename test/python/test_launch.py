"""launch/*.launch.py against the repository, without launch_ros (not on
these machines): each file is valid Python; run with stand-ins for the
launch modules, every executable it starts is one of ours, every params
file it names exists, and cell.launch.py starts exactly the nodes, in the
order, that `cncpick check-config` reads from the same params file."""

import ast
import importlib.util
import json
import pathlib
import re
import shlex
import subprocess
import sys
import types

import pytest

from conftest import REPO, bin_path

LAUNCH = REPO / "launch"
SHARE = REPO  # installed as share/cncpick/{launch,params} (Cargo.toml install_to_share)


def cargo_bins():
    text = (REPO / "Cargo.toml").read_text()
    bins = re.findall(r'\[\[bin\]\]\s*name = "([^"]+)"\s*path = "([^"]+)"', text)
    for name, path in bins:
        assert (REPO / path).is_file(), f"[[bin]] {name}: {path} is missing"
    return {name for name, _ in bins}


class Recorded:
    """A stand-in for a launch action or substitution: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(Recorded):
    def perform(self, context):
        return context[self.args[0]]


def stub_modules():
    mods = {}

    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m

    class LaunchDescription(Recorded):
        pass

    mod("launch", LaunchDescription=LaunchDescription)
    mod(
        "launch.actions",
        DeclareLaunchArgument=type("DeclareLaunchArgument", (Recorded,), {}),
        OpaqueFunction=type("OpaqueFunction", (Recorded,), {}),
        IncludeLaunchDescription=type("IncludeLaunchDescription", (Recorded,), {}),
    )
    mod("launch.substitutions", LaunchConfiguration=LaunchConfiguration)
    mod("launch.launch_description_sources", PythonLaunchDescriptionSource=type("Src", (Recorded,), {}))
    mod("launch_ros")
    mod("launch_ros.actions", Node=type("Node", (Recorded,), {}))
    mod("ament_index_python")
    mod("ament_index_python.packages", get_package_share_directory=lambda pkg: str(SHARE) if pkg == "cncpick" else None)
    return mods


def load(path, monkeypatch):
    for name, m in stub_modules().items():
        monkeypatch.setitem(sys.modules, name, m)
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def actions(desc):
    (entries,) = desc.args
    return entries


def nodes_of(cell_launch, params_file):
    """The Node actions cell.launch.py makes for params_file."""
    desc = cell_launch.generate_launch_description()
    (opaque,) = [a for a in actions(desc) if type(a).__name__ == "OpaqueFunction"]
    return opaque.kwargs["function"]({"params_file": str(params_file)})


@pytest.mark.parametrize("path", sorted(LAUNCH.glob("*.launch.py")), ids=lambda p: p.name)
def test_every_launch_file_is_valid_python_and_starts_only_our_executables(path, monkeypatch):
    ast.parse(path.read_text(), filename=str(path))
    module = load(path, monkeypatch)
    desc = module.generate_launch_description()
    bins = cargo_bins()
    started = [a for a in actions(desc) if type(a).__name__ == "Node"]
    if path.name == "cell.launch.py":
        started = nodes_of(module, REPO / "params" / "sim.yaml")
    for node in started:
        assert node.kwargs["package"] == "cncpick"
        assert node.kwargs["executable"] in bins, f"{path.name}: no executable {node.kwargs['executable']}"
    for inc in (a for a in actions(desc) if type(a).__name__ == "IncludeLaunchDescription"):
        (source,) = inc.args
        (included,) = source.args
        assert pathlib.Path(included).is_file(), f"{path.name} includes {included}, which is missing"
    for arg in (a for a in actions(desc) if type(a).__name__ == "DeclareLaunchArgument"):
        default = arg.kwargs.get("default_value")
        if isinstance(default, str) and default.endswith(".yaml"):
            assert pathlib.Path(default).is_file(), f"{path.name}: default {default} is missing"


@pytest.mark.parametrize("params", ["sim.yaml", "cell.yaml"])
def test_cell_launch_starts_the_graph_check_config_reads(params, monkeypatch, tmp_path):
    params_file = REPO / "params" / params
    out = subprocess.run(
        [str(bin_path("cncpick")), "check-config", "--json", "--params-file", str(params_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    graph = json.loads(out.stdout)
    module = load(LAUNCH / "cell.launch.py", monkeypatch)
    nodes = nodes_of(module, params_file)
    launched = [(n.kwargs["name"], n.kwargs["executable"]) for n in nodes]
    expected = [(n["name"], n["executable"]) for n in graph["nodes"]]
    assert launched == expected + [("manager", "manager")]
    assert all(n.kwargs["namespace"] == "cell" for n in nodes)
    # Every managed node respawns; the manager gets their order and the CNCs.
    assert all(n.kwargs.get("respawn") for n in nodes[:-1])
    # Each respawn is started through `cncpick with-participant-id`, which
    # gives a restart a Fast DDS participant number of its own
    # (test/rust/respawn_ids.rs runs it), then becomes the node.
    assert pathlib.Path(module.CNCPICK).parts[-3:] == ("lib", "cncpick", "cncpick")
    for n in nodes[:-1]:
        prefix = shlex.split(n.kwargs["prefix"])
        assert prefix == [module.CNCPICK, "with-participant-id", "--node", n.kwargs["name"], "--"], prefix
    (manager_params,) = nodes[-1].kwargs["parameters"]
    assert manager_params["node_names"] == [n["name"] for n in graph["nodes"]]
    assert manager_params["cnc_ids"] == graph["cnc_ids"]
    # The processes frames pass between get the Fast DDS profile with shared
    # memory, every other one (the manager too) the UDP-only one: the two
    # files `cncpick run --processes` writes too.
    # Under LOCALHOST discovery (./cncpick's), rmw_fastrtps would add shared
    # memory to the UDP-only ones: they get SYSTEM_DEFAULT, and their file
    # does LOCALHOST's discovery. Under another range every node as before.
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    for discovery_range in ("LOCALHOST", "SUBNET"):
        monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", discovery_range)
        profiles, ranges = {}, {}
        for n in nodes_of(module, params_file):
            env = n.kwargs["additional_env"]
            profile = pathlib.Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"])
            profiles[n.kwargs["executable"]] = str(profile.relative_to(REPO / "params"))
            ranges[n.kwargs["executable"]] = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
            assert profile.is_file(), profile
        frames = {"sim", "camera", "detector"} & profiles.keys()
        assert {"camera", "detector"} <= frames and ("sim" in frames) == (params == "sim.yaml"), profiles
        assert {"manager", "cnc", "state_manager"} <= profiles.keys()
        localhost = discovery_range == "LOCALHOST"
        for e in profiles:
            udp_only = localhost and e not in frames
            assert profiles[e] == ("fastdds-control.xml" if udp_only else "fastdds.xml"), (discovery_range, profiles)
            assert ranges[e] == ("SYSTEM_DEFAULT" if udp_only else None), (discovery_range, ranges)
    assert "<segment_size>" in (REPO / "params" / "fastdds.xml").read_text()
    # Well-formed XML to a strict parser (Fast DDS's tinyxml2 forgives a
    # "--" inside a comment; other tools do not).
    import xml.dom.minidom

    for name in ("fastdds.xml", "fastdds-control.xml"):
        xml.dom.minidom.parse(str(REPO / "params" / name))
    # Each node gets its own section of the file: the values check-config validated.
    import yaml

    doc = yaml.safe_load(params_file.read_text())
    for n in nodes[:-1]:
        (given,) = n.kwargs["parameters"]
        assert given == (doc.get(n.kwargs["name"]) or {}).get("ros__parameters", {}), n.kwargs["name"]
    # A section cncpick would refuse, the launch file must not start quietly
    # either: check-config is the gate for both.
    bad = tmp_path / "bad.yaml"
    bad.write_text(params_file.read_text().replace("lanes: 4", "lanes: 0", 1))
    out = subprocess.run(
        [str(bin_path("cncpick")), "check-config", "--params-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and str(bad) in out.stderr and "lanes" in out.stderr, out.stderr

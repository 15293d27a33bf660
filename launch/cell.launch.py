"""The whole cell on a cell computer with a full ROS 2 install:

    ros2 launch cncpick cell.launch.py params_file:=/path/to/cell.yaml

The nodes come from the params file exactly as `cncpick check-config` and
`./cncpick run` read it (src/cell/spec.rs; test/python/test_launch.py checks
that the two agree):
- a `sim` node when the file has a `sim` section (the simulated cell);
- state_manager, camera, detector, tracker;
- one `cnc_<id>` node (executable `cnc`) per id in the scheduler's `cnc_ids`;
- the scheduler;
- the manager, given the others' names in bring-up order. It configures and
  activates them in that order, watches their heartbeats, and brings a
  respawned node (respawn=True below) back to active.

Each node gets its own section of the file (plus any `/**` section), passed
as a dictionary, so the file's sections can be named by the bare node name.

Every node starts with FASTRTPS_DEFAULT_PROFILES_FILE pointing at one of
two files in share/cncpick/params (unless the environment sets it):
fastdds.xml for the processes camera frames pass between (sim, camera,
detector: a shared-memory segment large enough for frames), and
fastdds-control.xml, UDP only, for the others and the manager, so that a
process killed mid-message cannot stop them (the file says how). The
latter is for ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, under which
rmw_fastrtps would add shared memory to it: those processes get
SYSTEM_DEFAULT instead, and the file does LOCALHOST's discovery itself.
Under another range every node gets fastdds.xml.

Every node's command starts with `cncpick with-participant-id` (its
`prefix`): launch's respawn runs the same command again, and a process
started in place of a killed one would take the dead one's Fast DDS
participant number and ports, which its peers hold for the dead
participant until its lease runs out; so each restart takes a number
nobody held in the last 15 s (src/cell/launch_ids.rs), then becomes the
node.
"""

import os
import shlex

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

NAMESPACE = "cell"
# The scheduler's default CNCs (src/sched/params.rs) when its section names none.
DEFAULT_CNC_IDS = ["1", "2"]
# Installed beside this file's folder: share/cncpick/{launch,params}.
PARAMS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "params"))
DDS_PROFILE = os.path.join(PARAMS, "fastdds.xml")
DDS_CONTROL_PROFILE = os.path.join(PARAMS, "fastdds-control.xml")
DDS_PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
DISCOVERY_RANGE_ENV = "ROS_AUTOMATIC_DISCOVERY_RANGE"
# The executables camera frames pass between (src/cell/host.rs FRAME_EXECUTABLES).
FRAME_EXECUTABLES = ("sim", "camera", "detector")
# Every executable is installed in lib/cncpick (cargo-ament-build), beside share/.
CNCPICK = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "lib", "cncpick", "cncpick")
)


def dds_env(executable):
    """The environment a node of `executable` gets: our Fast DDS profile for
    what it carries, unless one is set."""
    if os.environ.get(DDS_PROFILE_ENV):
        return {}
    if executable in FRAME_EXECUTABLES or os.environ.get(DISCOVERY_RANGE_ENV) != "LOCALHOST":
        return {DDS_PROFILE_ENV: DDS_PROFILE}
    return {DDS_PROFILE_ENV: DDS_CONTROL_PROFILE, DISCOVERY_RANGE_ENV: "SYSTEM_DEFAULT"}


def participant_prefix(name):
    """The command before node `name`'s: a restart gets a participant number of its own."""
    return f"{shlex.quote(CNCPICK)} with-participant-id --node {shlex.quote(name)} --"


def read_params(path):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: the top level must map node names to ros__parameters")
    return doc


def section(doc, name):
    """Node `name`'s parameters: the `/**` section, then its own."""
    out = {}
    for key in ("/**", f"/**/{name}", name, f"{NAMESPACE}/{name}", f"/{NAMESPACE}/{name}"):
        out.update((doc.get(key) or {}).get("ros__parameters") or {})
    return out


def cell_nodes(doc):
    """[(node name, executable)] in bring-up order."""
    cnc_ids = [str(c) for c in section(doc, "scheduler").get("cnc_ids", DEFAULT_CNC_IDS)]
    nodes = [("sim", "sim")] if any(k in doc for k in ("sim", f"{NAMESPACE}/sim", f"/{NAMESPACE}/sim", "/**/sim")) else []
    nodes += [(n, n) for n in ("state_manager", "camera", "detector", "tracker")]
    nodes += [(f"cnc_{i}", "cnc") for i in cnc_ids]
    nodes.append(("scheduler", "scheduler"))
    return nodes, cnc_ids


def launch_cell(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    doc = read_params(params_file)
    nodes, cnc_ids = cell_nodes(doc)
    actions = [
        Node(
            package="cncpick",
            executable=executable,
            name=name,
            namespace=NAMESPACE,
            parameters=[section(doc, name)],
            respawn=True,
            respawn_delay=1.0,
            prefix=participant_prefix(name),
            output="screen",
            additional_env=dds_env(executable),
        )
        for name, executable in nodes
    ]
    manager = section(doc, "manager")
    manager.update({"node_names": [n for n, _ in nodes], "cnc_ids": cnc_ids})
    actions.append(
        Node(
            package="cncpick",
            executable="manager",
            name="manager",
            namespace=NAMESPACE,
            parameters=[manager],
            output="screen",
            additional_env=dds_env("manager"),
        )
    )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", description="The cell's params file (see params/cell.yaml)"),
            OpaqueFunction(function=launch_cell),
        ]
    )

"""colcon over the repository, as on a cell computer with ROS 2: both
packages build, and the ament index finds them and the node executables."""

import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tomllib

from conftest import REPO

NODE_EXECUTABLES = ["cncpick", "demo_source", "demo_registry", "kit_example", "sim", "camera", "detector", "tracker", "state_manager", "cnc", "scheduler", "manager", "recorder", "player"]


def fresh_workspace():
    """A copy of the repository as a fresh clone has it, in a workspace under
    target/. Only colcon's build/ survives from the last run (so a warm run
    recompiles only what changed); sources, install/ and log/ are new."""
    ws = REPO / "target" / "colcon-ws"
    ws.mkdir(parents=True, exist_ok=True)
    # r2r's generated bindings do not notice a changed message at the same
    # install path, so a kept build/ is only reused with the same interfaces.
    digest = hashlib.sha256()
    for f in sorted((REPO / "msg").rglob("*")):
        if f.is_file():
            digest.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    stamp = ws / "build" / ".interfaces-sha256"
    if (ws / "build").exists() and (not stamp.exists() or stamp.read_text() != digest.hexdigest()):
        shutil.rmtree(ws / "build")
    (ws / "build").mkdir(exist_ok=True)
    stamp.write_text(digest.hexdigest())
    for entry in ws.iterdir():
        if entry.name == "build":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    ignore = shutil.ignore_patterns("target", ".git", "build", "install", "log", ".cncpick", "__pycache__", ".pytest_cache", "runs")
    shutil.copytree(REPO, ws, ignore=ignore, symlinks=True, dirs_exist_ok=True)
    cfg = ws / ".cargo" / "config.toml"
    if cfg.exists():
        cfg.unlink()
    return ws


def cell_env(venv, prefixes=()):
    """What a sourced ROS 2 install gives: no cncpick overlay, no cncpick env
    file; `prefixes` are colcon install prefixes sourced on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNCPICK_")}
    all_prefixes = [str(p) for p in prefixes] + [venv]
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(all_prefixes)
    env["CMAKE_PREFIX_PATH"] = os.pathsep.join(all_prefixes)
    libs = [p for p in os.environ["LD_LIBRARY_PATH"].split(os.pathsep) if "overlay-" not in p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(p / "lib") for p in prefixes] + libs)
    env["PYTHONPATH"] = os.pathsep.join(p for p in os.environ["PYTHONPATH"].split(os.pathsep) if "overlay-" not in p)
    env.pop("IDL_PACKAGE_FILTER", None)
    return env


def test_colcon_builds_both_packages_and_the_ament_index_finds_them(monkeypatch):
    venv = os.environ["CNCPICK_VENV"]
    ws = fresh_workspace()
    env = cell_env(venv)

    listed = subprocess.run(["colcon", "list", "--names-only"], cwd=ws, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == ["cncpick", "cncpick_msgs"]

    # A build kept for one run needs no incremental state (about 1 GB).
    build = subprocess.run(
        ["colcon", "build", "--event-handlers", "console_direct-"],
        cwd=ws,
        env={**env, "CARGO_INCREMENTAL": "0"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    log = build.stdout[-4000:] + build.stderr[-4000:]
    assert build.returncode == 0, log
    assert "Summary: 2 packages finished" in build.stdout, log

    # colcon-ros-cargo rewrote .cargo/config.toml, yet the package filter held:
    # r2r generated bindings for exactly the listed interface packages.
    wanted = tomllib.loads((REPO / ".cargo" / "ros-interfaces.toml").read_text())["env"]["IDL_PACKAGE_FILTER"]
    # The build directory persists between runs: the newest output is this build's.
    generated = max(
        (ws / "build" / "cncpick").glob("*/build/r2r-*/out/_r2r_generated_msgs.rs"), key=lambda p: p.stat().st_mtime
    )
    modules = set(re.findall(r"^pub mod (\w+)", generated.read_text(), re.M))
    assert modules == set(wanted.split(";"))

    # colcon's default isolated layout: one install prefix per package.
    install = {p: ws / "install" / p for p in ("cncpick", "cncpick_msgs")}
    for pkg, prefix in install.items():
        assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / pkg).is_file(), pkg

    share = install["cncpick"] / "share" / "cncpick"
    assert (share / "launch" / "demo.launch.py").is_file()
    assert (share / "params" / "README.md").is_file()
    assert (share / "rviz" / "cell.rviz").is_file()
    # The installed cell.launch.py finds the installed executable it puts
    # before every node's command (`cncpick with-participant-id`).
    from test_launch import load

    cell_launch = load(share / "launch" / "cell.launch.py", monkeypatch)
    assert pathlib.Path(cell_launch.CNCPICK) == install["cncpick"] / "lib" / "cncpick" / "cncpick"
    assert pathlib.Path(cell_launch.CNCPICK).is_file()

    # The ament index, asked through ament_index_python as ros2 run would.
    query = (
        "import sys, os\n"
        "from ament_index_python.packages import get_package_prefix\n"
        "for p in ('cncpick', 'cncpick_msgs'):\n"
        "    print(p, get_package_prefix(p))\n"
        "lib = os.path.join(get_package_prefix('cncpick'), 'lib', 'cncpick')\n"
        "print('executables', ' '.join(sorted(os.listdir(lib))))\n"
    )
    run_env = cell_env(venv, prefixes=install.values())
    found = subprocess.run(["python", "-c", query], env=run_env, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    lines = dict(line.split(" ", 1) for line in found.stdout.strip().splitlines())
    assert pathlib.Path(lines["cncpick"]) == install["cncpick"]
    assert pathlib.Path(lines["cncpick_msgs"]) == install["cncpick_msgs"]
    for exe in NODE_EXECUTABLES:
        assert exe in lines["executables"].split(), lines["executables"]

    # The installed executable runs in the colcon-installed environment.
    run_env["ROS_DISTRO"] = "jazzy"
    run_env.pop("ROS_DOMAIN_ID", None)  # check-env opens no DDS participant
    checked = subprocess.run(
        [str(install["cncpick"] / "lib" / "cncpick" / "cncpick"), "check-env"], env=run_env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "environment ok"

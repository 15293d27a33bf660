"""Static checks of the repository layout that the build relies on."""

import re
import tomllib
import xml.etree.ElementTree as ET

from conftest import REPO

# What r2r itself needs generated: parameters and actions.
R2R_REQUIRES = {"rcl_interfaces", "action_msgs", "unique_identifier_msgs", "builtin_interfaces"}


def idl_filter():
    cfg = tomllib.loads((REPO / ".cargo" / "ros-interfaces.toml").read_text())
    return set(cfg["env"]["IDL_PACKAGE_FILTER"].split(";"))


def depends(package_xml):
    root = ET.parse(package_xml).getroot()
    return {e.text for e in root if e.tag in ("depend", "build_depend", "exec_depend")}


def used_in_rust_sources():
    used = set()
    for path in list((REPO / "src").rglob("*.rs")) + list((REPO / "test").rglob("*.rs")):
        used |= set(re.findall(r"\br2r::([a-z][a-z0-9_]*_(?:msgs|srvs|interfaces))::", path.read_text()))
    return used


def test_idl_package_filter_lists_exactly_the_interface_packages_used():
    msgs_deps = depends(REPO / "msg" / "package.xml") - {"rosidl_default_runtime"}
    expected = used_in_rust_sources() | {"cncpick_msgs"} | msgs_deps | R2R_REQUIRES
    assert idl_filter() == expected


def test_the_rust_package_declares_every_interface_package_it_generates():
    assert idl_filter() <= depends(REPO / "package.xml")


def test_package_manifests_are_format_3_with_the_right_build_types():
    for path, build_type in [(REPO / "package.xml", "ament_cargo"), (REPO / "msg" / "package.xml", "ament_cmake")]:
        root = ET.parse(path).getroot()
        assert root.get("format") == "3", path
        assert root.find("export/build_type").text == build_type, path

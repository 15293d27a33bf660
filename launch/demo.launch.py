"""The demo graph on a cell computer with a full ROS 2 install:

    ros2 launch cncpick demo.launch.py frames:=200

Here (no launch_ros) the same graph runs with `./cncpick run`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    frames = LaunchConfiguration("frames")
    rate_hz = LaunchConfiguration("rate_hz")
    return LaunchDescription(
        [
            DeclareLaunchArgument("frames", default_value="100"),
            DeclareLaunchArgument("rate_hz", default_value="20.0"),
            Node(package="cncpick", executable="demo_registry", namespace="cell", output="screen"),
            Node(
                package="cncpick",
                executable="demo_source",
                namespace="cell",
                output="screen",
                arguments=["--frames", frames, "--rate-hz", rate_hz],
            ),
        ]
    )

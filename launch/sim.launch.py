"""The simulated cell (belt, camera renderer, GRBL emulators on PTYs) and
every node, on a cell computer with a full ROS 2 install:

    ros2 launch cncpick sim.launch.py [params_file:=...]

It is cell.launch.py with the simulated cell's params file, share/cncpick/
params/sim.yaml, as the default. Here (no launch_ros) `./cncpick run` starts
the same graph from the same file.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PARAMS_FILE = os.path.join("params", "sim.yaml")


def generate_launch_description():
    share = get_package_share_directory("cncpick")
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=os.path.join(share, PARAMS_FILE)),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(os.path.join(share, "launch", "cell.launch.py")),
                launch_arguments={"params_file": LaunchConfiguration("params_file")}.items(),
            ),
        ]
    )

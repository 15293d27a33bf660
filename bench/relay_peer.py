"""The relay `bench/run e2e` measures ours against, written with rclpy: it
subscribes to /bench/relay/in (cncpick_msgs/DetectionArray), does the same
trivial processing as ours (counts the detections, marks the array with the
relay's name) and publishes the array on /bench/relay/out, until killed.

Usage: python bench/relay_peer.py   (ROS_DOMAIN_ID as the bench sets it)
"""

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from cncpick_msgs.msg import DetectionArray


def main():
    rclpy.init()
    node = rclpy.create_node("relay_rclpy", namespace="/bench")
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    out = node.create_publisher(DetectionArray, "relay/out", qos)
    seen = [0]

    def relay(msg):
        seen[0] += len(msg.detections)
        msg.header.frame_id = "relay_rclpy"
        out.publish(msg)

    node.create_subscription(DetectionArray, "relay/in", relay, qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("relay_rclpy: up", flush=True)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGTERM (how the bench stops a relay) shuts the context down under
        # the spinning executor; anything else is a real error.
        if rclpy.ok():
            raise
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()

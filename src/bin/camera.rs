//! The `camera` node, for `ros2 launch`.

fn main() {
    cncpick::camera::node::main()
}

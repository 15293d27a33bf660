//! The `detector` node, for `ros2 launch`.

fn main() {
    cncpick::detector::node::main()
}

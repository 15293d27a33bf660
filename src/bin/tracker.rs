//! The `tracker` node, for `ros2 launch`.

fn main() {
    cncpick::tracker::node::main()
}

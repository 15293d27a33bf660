//! The `sim` node (the simulated cell), for `ros2 launch`.

fn main() {
    cncpick::sim::node::main()
}

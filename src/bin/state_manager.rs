//! The `state_manager` node, for `ros2 launch`.

fn main() {
    cncpick::state::node::main()
}

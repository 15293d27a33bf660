//! The `scheduler` node, for `ros2 launch`.

fn main() {
    cncpick::sched::node::main()
}

//! The `manager` node, for `ros2 launch`: brings the nodes named in its
//! `node_names` parameter up in order, watches and restarts them.

fn main() {
    cncpick::manager::node::main()
}

//! Node executable: the node-kit example. New nodes copy it.
//!   kit_example [--ros-args -r __node:=NAME -p fail_on:=activate --params-file FILE]
fn main() {
    cncpick::example::node::main()
}

//! A motion controller node (`cnc_<id>`), for `ros2 launch`: one per CNC,
//! e.g. `cnc --ros-args -r __node:=cnc_2 -p cnc_id:=2 -p port:=/dev/ttyUSB1`.

fn main() {
    cncpick::motion::node::main()
}

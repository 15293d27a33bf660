//! Running the cell: its node graph from the params files ([`spec`]), where
//! the nodes run ([`host`]), the main job ([`run`]) and its report.

pub mod chaos;
pub mod chaos_node;
pub mod host;
pub mod launch_ids;
pub mod participant_ids;
pub mod report;
pub mod run;
pub mod spec;
pub mod tied;

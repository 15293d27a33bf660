//! Frames in one process: the sim's frame reaches a subscriber of the
//! camera's topic as the very same allocation (the camera relays the Arc),
//! and the detector in the same process takes the in-process path.

use cncpick::camera::node::CameraNode;
use cncpick::camera::params::CameraParams;
use cncpick::kit::frames::{self, Frame, FramePublisher, Path, Received};
use cncpick::kit::lifecycle::ActiveGate;
use cncpick::kit::node::ServedNode;
use cncpick::kit::spin::create_node;
use cncpick::kit::testing::DomainLease;
use opencv::core::{Mat, Scalar, CV_8UC3};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_passes_sim_to_camera_to_detector_in_one_process_without_a_copy() {
    let lease = DomainLease::acquire().unwrap();
    std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
    let ctx = r2r::Context::create().unwrap();
    // The simulator's side: a frame publisher on /cell/sim/image_raw.
    let sim_node = create_node(&ctx, "sim", "/cell").unwrap();
    let gate = ActiveGate::always_open();
    let sim = {
        let mut n = sim_node.lock();
        FramePublisher::new(&mut n, "/cell", "sim/image_raw", gate.clone()).unwrap()
    };
    let params = CameraParams {
        width_px: 64,
        height_px: 48,
        ..CameraParams::default()
    };
    let camera =
        ServedNode::start(&ctx, "camera", "/cell", params, |c| Ok(CameraNode::new(c))).unwrap();
    // The detector's side: what it subscribes to in this process.
    let probe = create_node(&ctx, "probe", "/cell").unwrap();
    let mut stream = {
        let mut n = probe.lock();
        frames::subscribe(&mut n, "/cell", "camera/image_raw").unwrap()
    };
    // Subscribed before the camera made its publisher: DDS for now.
    assert_eq!(stream.path, Path::Dds);
    assert!(camera.change_state("configure").await);
    assert!(camera.change_state("activate").await);

    let image = Mat::new_rows_cols_with_default(48, 64, CV_8UC3, Scalar::all(70.0)).unwrap();
    let sent = Arc::new(Frame {
        seq: 1,
        stamp: cncpick::kit::time::wall_now(),
        frame_id: "camera".into(),
        image,
    });
    // The camera's relay subscribes on activate; publish until it relays.
    let mut got = None;
    for _ in 0..100 {
        assert!(sim.publish(sent.clone()).unwrap());
        if let Ok(Some(Received::Frame(f))) =
            tokio::time::timeout(Duration::from_millis(50), stream.next()).await
        {
            got = Some(f);
            break;
        }
    }
    let got = got.expect("the camera relayed no frame");
    assert_eq!(stream.path, Path::InProcess);
    assert!(Arc::ptr_eq(&got, &sent), "the same allocation, not a copy");
    // A subscriber that comes later goes straight to the in-process path.
    let late = {
        let mut n = probe.lock();
        frames::subscribe(&mut n, "/cell", "camera/image_raw").unwrap()
    };
    assert_eq!(late.path, Path::InProcess);
    camera.stop().await;
}

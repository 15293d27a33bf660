//! Benchmark `motion`: picks of moving objects through the GRBL emulator on
//! a PTY in the simulated world (belt at its nominal 0.2 m/s, no faults),
//! an oracle reading the objects' true positions in place of perception and
//! the scheduler. Figures: the share of started picks that end binned, the
//! pick cycle time (start of the approach to the release done), the
//! intercept error (nozzle to object centre as it took it, by the world's
//! own account), and the e-stop latency: a std_srvs/Trigger call to
//! `cnc_1/estop` until the feed-hold byte is written, through DDS. The peer
//! is send-and-wait streaming (each line waits for its `ok`, as the one
//! released ROS 2 GRBL driver does), timed on the same 300-line program as
//! our character counting. Prints one JSON object on its last line. Run
//! with `bench/run motion`.

use cncpick::detector::score::quantile;
use cncpick::kit::call::call;
use cncpick::kit::call::send_goal;
use cncpick::kit::node::ServedNode;
use cncpick::kit::spin::{create_node, Spinner};
use cncpick::motion::grbl::client::{Answer, ClientConfig, Grbl};
use cncpick::motion::node::MotionNode;
use cncpick::motion::params::MotionParams;
use cncpick::msgs::msg::PickOutcome;
use cncpick::sim::grbl::machine::Config;
use cncpick::sim::harness::PickCell;
use cncpick::sim::node_cell::NodeCell;
use cncpick::sim::params::SimParams;
use cncpick::sim::truth::EventKind;
use cncpick::state::lifecycle::ObjState;
use std::time::{Duration, Instant};

const PICKS: usize = 120;
const ESTOPS: usize = 12;

async fn picks() -> anyhow::Result<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("cncpick-bench-motion-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sim = SimParams {
        seed: 5,
        arrival_rate_per_min: 120.0,
        burst_probability: 0.0,
        ..SimParams::default()
    };
    let motion = MotionParams {
        motion_wait_for_trigger_s: 15.0,
        ..MotionParams::default()
    };
    let mut c = NodeCell::start(&dir, sim, Config::default(), motion).await?;
    let epoch = c.epoch_above(0, Duration::from_secs(10)).await?;
    let (mut skip, mut rejected, mut outcomes, mut cycles) =
        (Vec::new(), 0, Vec::new(), Vec::new());
    let mut recorded_picked = 0;
    // As the scheduler: after an accepted goal, the next skips the wait for the server.
    let matched = std::sync::atomic::AtomicBool::new(false);
    while outcomes.len() < PICKS {
        let (truth_id, id, goal) = c.next_goal(epoch, &mut skip).await?;
        let Ok((_goal, result, _feedback)) =
            send_goal(&c.action, "pick", goal, Duration::from_secs(5), &matched).await
        else {
            // Out of reach by the time the goal arrived: a scheduler would
            // take the assignment back and hand the object on.
            rejected += 1;
            continue;
        };
        let (_, r) = tokio::time::timeout(Duration::from_secs(30), result).await??;
        cycles.push(r.cycle_time_s);
        if c.state_of(id).await? == ObjState::Picked.id() {
            recorded_picked += 1;
        }
        outcomes.push((truth_id, r.outcome.value));
        eprintln!(
            "pick {}/{PICKS}: outcome {}",
            outcomes.len(),
            r.outcome.value
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = c
        .cell
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let picked = PickOutcome::PICKED as u8;
    let binned = outcomes
        .iter()
        .filter(|(id, o)| {
            *o == picked
                && events
                    .iter()
                    .any(|e| e.object_id == *id && e.kind == EventKind::Binned)
        })
        .count();
    let aborted = outcomes
        .iter()
        .filter(|(_, o)| *o == PickOutcome::ABORTED as u8)
        .count();
    let offsets: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == EventKind::PickedUp)
        .filter_map(|e| {
            e.detail
                .strip_prefix("xy offset ")?
                .strip_suffix(" mm")?
                .parse()
                .ok()
        })
        .collect();
    Ok(serde_json::json!({
        "goals_accepted": PICKS,
        "goals_rejected_on_arrival": rejected,
        "picks_abandoned_late": aborted,
        "picks_recorded_picked_by_the_state_manager": recorded_picked,
        "picks_binned": binned,
        "binned_share_of_accepted": binned as f64 / PICKS as f64,
        "cycle_time_s_p10": quantile(&cycles, 0.1),
        "cycle_time_s_p50": quantile(&cycles, 0.5),
        "cycle_time_s_p90": quantile(&cycles, 0.9),
        "cycle_time_s_max": quantile(&cycles, 1.0),
        "intercept_error_mm_p50": quantile(&offsets, 0.5),
        "intercept_error_mm_p90": quantile(&offsets, 0.9),
        "intercept_error_mm_max": quantile(&offsets, 1.0),
    }))
}

/// Our streaming against send-and-wait, on the same 300 short lines.
async fn streaming() -> anyhow::Result<serde_json::Value> {
    let cell = PickCell::start(SimParams::default(), 1.0)?;
    let g = Grbl::open(ClientConfig::new(cell.emu().path()))?;
    g.soft_reset(Duration::from_secs(2)).await?;
    let lines: Vec<String> = (0..300)
        .map(|k| match k % 3 {
            0 => "G90".into(),
            1 => "G21 G94".into(),
            _ => "M9".into(),
        })
        .collect();
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t0 = Instant::now();
        let all = futures::future::join_all(
            lines
                .iter()
                .map(|l| g.send_within(l, Duration::from_secs(10))),
        )
        .await;
        anyhow::ensure!(all.iter().all(|a| a == &Ok(Answer::Ok)));
        ours.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        for l in &lines {
            anyhow::ensure!(g.send_within(l, Duration::from_secs(10)).await? == Answer::Ok);
        }
        peer.push(t0.elapsed().as_secs_f64());
    }
    let (o, p) = (quantile(&ours, 0.5), quantile(&peer, 0.5));
    Ok(serde_json::json!({
        "stream_300_lines_s_median": o,
        "peer_send_and_wait_300_lines_s_median": p,
        "ratio_send_and_wait_over_ours": p / o,
    }))
}

/// E-stop through DDS: the node's own figure (request in to byte out) and
/// the caller's round trip.
async fn estop() -> anyhow::Result<serde_json::Value> {
    let cell = PickCell::start(SimParams::default(), 1.0)?;
    let ctx = r2r::Context::create()?;
    let params = MotionParams {
        port: cell.emu().path().into(),
        ..MotionParams::default()
    };
    let cnc = ServedNode::start(&ctx, "cnc_1", "/cell", params, |c| Ok(MotionNode::new(c)))?;
    anyhow::ensure!(cnc.change_state("configure").await, "configure failed");
    let probe = create_node(&ctx, "bench_estop", "/cell")?;
    let client = probe
        .lock()
        .create_client::<r2r::std_srvs::srv::Trigger::Service>(
            "/cell/cnc_1/estop",
            r2r::QosProfile::services_default(),
        )?;
    let mut spinner = Spinner::start(probe.clone());
    let (mut inside, mut round) = (Vec::new(), Vec::new());
    for _ in 0..ESTOPS {
        let t0 = Instant::now();
        let r = call(
            &client,
            "estop",
            &Default::default(),
            Duration::from_secs(5),
        )
        .await?;
        round.push(t0.elapsed().as_secs_f64() * 1e3);
        let ms: f64 = r
            .message
            .strip_prefix("feed hold written ")
            .and_then(|m| m.split(' ').next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("estop answered {:?}", r.message))?;
        inside.push(ms);
        // Inactive, the node stays configured through an e-stop (only an
        // Active one is taken out through its error transition); the board
        // is reset and at rest for the next one.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spinner.stop();
    cnc.stop().await;
    Ok(serde_json::json!({
        "estops": ESTOPS,
        "estop_call_to_feed_hold_written_ms_p50": quantile(&inside, 0.5),
        "estop_call_to_feed_hold_written_ms_p99": quantile(&inside, 0.99),
        "estop_round_trip_ms_p50": quantile(&round, 0.5),
        "estop_round_trip_ms_p99": quantile(&round, 0.99),
    }))
}

fn main() -> anyhow::Result<()> {
    cncpick::kit::env::require_or_exit();
    // A DDS domain of its own.
    let lease = cncpick::kit::testing::DomainLease::acquire()?;
    std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
    cncpick::kit::app::init_tracing_at(Some("warn"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = serde_json::Map::new();
    for part in [
        rt.block_on(picks())?,
        rt.block_on(streaming())?,
        rt.block_on(estop())?,
    ] {
        if let serde_json::Value::Object(m) = part {
            out.extend(m);
        }
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

//! The KPIs in Prometheus' text format (with the official client's
//! encoder), and a small HTTP server for `GET /metrics`.

use super::metrics::Kpis;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type G = Gauge<f64, AtomicU64>;
type Labelled = Family<Vec<(String, String)>, G>;

fn gauge(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, v: f64) {
    let g = G::default();
    g.set(v);
    match unit {
        Some(u) => r.register_with_unit(name, help, u, g),
        None => r.register(name, help, g),
    }
}

fn family(
    r: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    label: &str,
    values: impl Iterator<Item = (String, f64)>,
) {
    let f = Labelled::default();
    for (l, v) in values {
        f.get_or_create(&vec![(label.to_string(), l)]).set(v);
    }
    match unit {
        Some(u) => r.register_with_unit(name, help, u, f),
        None => r.register(name, help, f),
    }
}

/// The exposition of `k`, every name prefixed `cncpick_`. The seed's
/// names (6.1): objects_per_minute, pickup_success_rate,
/// average_cycle_time, system_utilization; per node message_rate,
/// processing_latency, error_rate, queue_depth; per lane throughput,
/// miss_rate, congestion_score.
pub fn render(k: &Kpis) -> String {
    let mut r = Registry::with_prefix("cncpick");
    gauge(
        &mut r,
        "objects_per_minute",
        "Objects registered per minute over the window",
        None,
        k.objects_per_min,
    );
    gauge(
        &mut r,
        "pickup_success_rate",
        "Picked / (picked + dropped + missed) over the window",
        None,
        k.pick_success_rate,
    );
    gauge(
        &mut r,
        "average_cycle_time",
        "Mean pick cycle time (goal accepted to released) over the window",
        Some(Unit::Seconds),
        k.avg_cycle_time_s,
    );
    gauge(
        &mut r,
        "system_utilization",
        "Mean fraction of time the CNCs were busy",
        None,
        k.utilisation,
    );
    gauge(
        &mut r,
        "miss_rate",
        "Missed / (picked + dropped + missed) over the window",
        None,
        k.miss_rate,
    );
    for (name, help, v) in [
        ("window_picked", "Objects picked in the window", k.picked),
        ("window_dropped", "Objects dropped in the window", k.dropped),
        ("window_missed", "Objects missed in the window", k.missed),
        (
            "window_bypassed",
            "Objects bypassed in the window",
            k.bypassed,
        ),
    ] {
        gauge(&mut r, name, help, None, v as f64);
    }
    gauge(
        &mut r,
        "window",
        "The KPI window",
        Some(Unit::Seconds),
        k.window_s,
    );
    family(
        &mut r,
        "cnc_utilization",
        "Fraction of status samples in which the CNC was busy",
        None,
        "cnc",
        k.cncs.iter().map(|c| (c.cnc_id.clone(), c.utilisation)),
    );
    family(
        &mut r,
        "cnc_picks",
        "Picks in the window",
        None,
        "cnc",
        k.cncs.iter().map(|c| (c.cnc_id.clone(), c.picks as f64)),
    );
    family(
        &mut r,
        "cnc_failures",
        "Failed picks (dropped, missed, aborted, fault) in the window",
        None,
        "cnc",
        k.cncs.iter().map(|c| (c.cnc_id.clone(), c.failures as f64)),
    );
    let node = |f: fn(&super::metrics::NodeKpi) -> f64| {
        k.nodes.iter().map(move |n| (n.node.clone(), f(n)))
    };
    family(
        &mut r,
        "node_message_rate",
        "Messages handled per second",
        None,
        "node",
        node(|n| n.message_rate_hz),
    );
    family(
        &mut r,
        "node_processing_latency",
        "Latest processing latency the node reported",
        Some(Unit::Seconds),
        "node",
        node(|n| n.processing_latency_s),
    );
    family(
        &mut r,
        "node_error_rate",
        "Errors per message",
        None,
        "node",
        node(|n| n.error_rate),
    );
    family(
        &mut r,
        "node_queue_depth",
        "Work queued in the node",
        None,
        "node",
        node(|n| n.queue_depth as f64),
    );
    let lane = |f: fn(&super::metrics::LaneKpi) -> f64| {
        k.lanes.iter().map(move |l| (l.lane.to_string(), f(l)))
    };
    family(
        &mut r,
        "lane_throughput",
        "Objects picked per minute in the lane",
        None,
        "lane",
        lane(|l| l.throughput_per_min),
    );
    family(
        &mut r,
        "lane_miss_rate",
        "Missed / (picked + dropped + missed) in the lane",
        None,
        "lane",
        lane(|l| l.miss_rate),
    );
    family(
        &mut r,
        "lane_congestion_score",
        "Live objects per metre of belt in the lane",
        None,
        "lane",
        lane(|l| l.congestion),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Serves the latest exposition on `GET /metrics` until dropped.
pub struct MetricsServer {
    pub port: u16,
    page: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `bind` (e.g. `127.0.0.1:9464`; port 0 picks one).
    pub fn start(bind: &str) -> anyhow::Result<MetricsServer> {
        let server = tiny_http::Server::http(bind)
            .map_err(|e| anyhow::anyhow!("metrics endpoint on {bind}: {e}"))?;
        let port = server.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
        let page: Arc<Mutex<String>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (page, stop) = (page.clone(), stop.clone());
            std::thread::Builder::new()
                .name("metrics-http".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(200)) else {
                            continue;
                        };
                        let resp = if req.url() == "/metrics" {
                            let body = page.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            let ct = tiny_http::Header::from_bytes(
                                "Content-Type",
                                "text/plain; version=0.0.4; charset=utf-8",
                            )
                            .ok();
                            let mut r = tiny_http::Response::from_string(body);
                            if let Some(h) = ct {
                                r.add_header(h);
                            }
                            r
                        } else {
                            tiny_http::Response::from_string("cncpick: see /metrics\n")
                                .with_status_code(404)
                        };
                        let _ = req.respond(resp);
                    }
                })?
        };
        Ok(MetricsServer {
            port,
            page,
            stop,
            thread: Some(thread),
        })
    }

    /// The page served; replace its text to publish.
    pub fn page(&self) -> Arc<Mutex<String>> {
        self.page.clone()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! Benchmark `state`: durable transitions per second directly through the
//! store (the core) and end to end from an r2r client through the
//! `state_manager` process's service, each against the peer, a bare SQLite
//! commit of one row with the same durability (WAL, synchronous=FULL) on the
//! same disk, measured in the same run; and restart recovery time with
//! 100,000 objects in the database (open + integrity check + reconcile, and
//! process start to the first answer). Prints one JSON object on its last
//! line. Run with `bench/run state`.

use cncpick::detector::score::quantile;
use cncpick::kit::call::{call, call_matched};
use cncpick::kit::spin::create_node;
use cncpick::msgs::srv::{BeginEpoch, GetObject, RegisterObject, TransitionObject};
use cncpick::state::lifecycle::ObjState;
use cncpick::state::store::{Registration, Seen, Store, TransitionRequest};
use r2r::lifecycle_msgs::srv::ChangeState;
use rusqlite::{Connection, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;
const OBJECTS: u32 = 400;
const BIG: u32 = 100_000;
const S: i64 = 1_000_000_000;

fn id(k: u32) -> [u8; 16] {
    *uuid::Uuid::from_u128(0x5a00_0000_0000_0000_0000_0000_0000_0000 | k as u128).as_bytes()
}

fn registration(k: u32, at_ns: i64) -> Registration {
    Registration {
        request_id: String::new(),
        object_id: id(k),
        actor: "bench".into(),
        object: Seen {
            vision_id: format!("vision_{at_ns}_{}_{k}", k % 4),
            lane: (k % 4) as u8,
            class_id: "red_box".into(),
            confidence: 0.9,
            x_m: 0.5,
            y_m: 0.1,
            velocity_x_mps: 0.2,
            detected_at_ns: at_ns,
        },
    }
}

/// The picking path after registration: three CNC transitions.
const PATH: [(ObjState, ObjState); 3] = [
    (ObjState::Detected, ObjState::Assigned),
    (ObjState::Assigned, ObjState::Picking),
    (ObjState::Picking, ObjState::Picked),
];

fn step(k: u32, n: usize, epoch: u64) -> TransitionRequest {
    let (expected, new) = PATH[n];
    TransitionRequest {
        request_id: format!("{k}-{n}"),
        object_id: id(k),
        expected,
        new,
        actor: "bench".into(),
        cnc_id: "1".into(),
        epoch,
        reason: String::new(),
        belt_position_m: 2.5,
    }
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
    }
    p
}

/// Durable commits per second through the store: each object registered
/// and taken through the picking path, one commit per call.
fn core_rate(dir: &Path) -> anyhow::Result<f64> {
    let mut s = Store::open(&fresh(dir, "core.sqlite"))?;
    let epoch = s.begin_epoch("1", 0, f64::INFINITY, "bench", &[])?.epoch;
    let t0 = Instant::now();
    for k in 0..OBJECTS {
        s.register(&registration(k, k as i64), k as i64)?;
        for n in 0..PATH.len() {
            s.transition(&step(k, n, epoch), k as i64)?;
        }
    }
    Ok((OBJECTS * 4) as f64 / t0.elapsed().as_secs_f64())
}

/// The peer: one-row commits, same file settings, nothing else.
fn bare_rate(dir: &Path) -> anyhow::Result<f64> {
    let mut c = Connection::open(fresh(dir, "bare.sqlite"))?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         CREATE TABLE t (seq INTEGER PRIMARY KEY, v BLOB NOT NULL);",
    )?;
    let t0 = Instant::now();
    for k in 0..OBJECTS * 4 {
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO t (seq, v) VALUES (?1, ?2)",
            rusqlite::params![k, &id(k)[..]],
        )?;
        tx.commit()?;
    }
    Ok((OBJECTS * 4) as f64 / t0.elapsed().as_secs_f64())
}

/// The state_manager binary next to this benchmark's (release) executable.
fn state_manager_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("state_manager"))
        .unwrap_or_else(|| "state_manager".into())
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, as ros2 launch stops a node; SIGKILL if it lingers.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(db: &Path, name: &str) -> anyhow::Result<Server> {
    Ok(Server(
        std::process::Command::new(state_manager_bin())
            .args(["--ros-args", "-r", &format!("__node:={name}")])
            .args(["-p", &format!("database_path:={}", db.display())])
            // Its objects are dated 1970: retention would prune them at once.
            .args(["-p", "snapshot_period_s:=0.0", "-p", "retention_days:=0.0"])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()?,
    ))
}

/// A client as the kit's Caller uses one: once a call is answered, later
/// calls skip the wait for the server (`call_matched`).
struct Svc<T: r2r::WrappedServiceTypeSupport + 'static> {
    client: r2r::Client<T>,
    name: String,
    matched: AtomicBool,
}

impl<T: r2r::WrappedServiceTypeSupport + 'static> Svc<T> {
    fn new(n: &mut r2r::Node, name: &str) -> anyhow::Result<Self> {
        Ok(Svc {
            client: n.create_client(name, cncpick::kit::qos::busy_service())?,
            name: name.into(),
            matched: AtomicBool::new(false),
        })
    }

    /// Calls with a bound, sending again (the requests are idempotent) if
    /// an answer is lost while the client's reader is still being matched.
    async fn ask(&self, req: &T::Request, timeout: Duration) -> anyhow::Result<T::Response> {
        let mut last = None;
        for _ in 0..4 {
            match call_matched(&self.client, &self.name, req, timeout, &self.matched).await {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(anyhow::anyhow!(
            "{}",
            last.map(|e| e.to_string()).unwrap_or_default()
        ))
    }
}

const CALL: Duration = Duration::from_secs(5);

struct Clients {
    change: Svc<ChangeState::Service>,
    register: Svc<RegisterObject::Service>,
    transition: Svc<TransitionObject::Service>,
    epoch: Svc<BeginEpoch::Service>,
    get: Svc<GetObject::Service>,
}

impl Clients {
    fn new(node: &cncpick::kit::spin::SharedNode, name: &str) -> anyhow::Result<Clients> {
        let mut n = node.lock();
        Ok(Clients {
            change: Svc::new(&mut n, &format!("/cell/{name}/change_state"))?,
            register: Svc::new(&mut n, "/cell/state_manager/register_object")?,
            transition: Svc::new(&mut n, "/cell/state_manager/transition_object")?,
            epoch: Svc::new(&mut n, "/cell/state_manager/begin_epoch")?,
            get: Svc::new(&mut n, "/cell/state_manager/get_object")?,
        })
    }

    async fn bring_up(&self) -> anyhow::Result<()> {
        for (tid, label) in [(1u8, "configure"), (3, "activate")] {
            let mut req = ChangeState::Request::default();
            req.transition.id = tid;
            req.transition.label = label.into();
            // Not re-sent: a lifecycle transition is not idempotent.
            let r = call(
                &self.change.client,
                &self.change.name,
                &req,
                Duration::from_secs(120),
            );
            if !r.await?.success {
                anyhow::bail!("state_manager: {label} failed");
            }
        }
        Ok(())
    }

    fn register_request(&self, k: u32) -> RegisterObject::Request {
        let mut r = RegisterObject::Request {
            request_id: format!("reg-{k}"),
            vision_id: format!("vision_0_0_{k}"),
            class_id: "red_box".into(),
            actor: "bench".into(),
            velocity_x_mps: 0.0,
            ..Default::default()
        };
        r.object_id.uuid = id(k).to_vec();
        r.position.x = 0.5;
        r
    }

    fn transition_request(&self, k: u32, n: usize, epoch: u64) -> TransitionObject::Request {
        let t = step(k, n, epoch);
        let mut r = TransitionObject::Request {
            request_id: t.request_id,
            actor: t.actor,
            cnc_id: t.cnc_id,
            epoch,
            ..Default::default()
        };
        r.object_id.uuid = id(k).to_vec();
        r.expected_state.id = t.expected.id();
        r.new_state.id = t.new.id();
        r
    }

    /// Objects `ks`, each registered and taken through the picking path;
    /// returns each call's latency in ms.
    async fn drive(&self, ks: Vec<u32>, epoch: u64) -> anyhow::Result<Vec<f64>> {
        let mut lat = Vec::new();
        for k in ks {
            let t0 = Instant::now();
            let r = self.register.ask(&self.register_request(k), CALL).await?;
            anyhow::ensure!(r.accepted, "register {k}: {}", r.error);
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            for n in 0..PATH.len() {
                let t0 = Instant::now();
                let req = self.transition_request(k, n, epoch);
                let r = self.transition.ask(&req, CALL).await?;
                anyhow::ensure!(r.accepted, "transition {k}/{n}: {}", r.error);
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(lat)
    }
}

/// End to end: (sequential commits/s, latency p50 ms, p99 ms, commits/s
/// with 16 clients' requests in flight at once).
async fn end_to_end(dir: &Path, round: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
    let db = fresh(dir, "e2e.sqlite");
    let name = format!("state_manager_bench{round}");
    let _server = spawn_server(&db, &name)?;
    let ctx = r2r::Context::create()?;
    let node = create_node(&ctx, &format!("bench_state{round}"), "/cell")?;
    let mut spinner = cncpick::kit::spin::Spinner::start(node.clone());
    let c = std::sync::Arc::new(Clients::new(&node, &name)?);
    c.bring_up().await?;
    let req = BeginEpoch::Request {
        cnc_id: "1".into(),
        ..Default::default()
    };
    let epoch = c.epoch.ask(&req, CALL).await?.epoch;
    // Warm-up: every client matched, caches hot.
    c.drive(vec![1_000_000], epoch).await?;
    let t0 = Instant::now();
    let lat = c.drive((0..OBJECTS).collect(), epoch).await?;
    let sequential = lat.len() as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..16u32)
        .map(|w| {
            let c = c.clone();
            let ks: Vec<u32> = (0..OBJECTS)
                .filter(|k| k % 16 == w)
                .map(|k| k + 10_000)
                .collect();
            tokio::spawn(async move { c.drive(ks, epoch).await })
        })
        .collect();
    let mut n = 0;
    for w in workers {
        n += w.await??.len();
    }
    let concurrent = n as f64 / t0.elapsed().as_secs_f64();
    drop(c);
    spinner.stop();
    Ok((
        sequential,
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        concurrent,
    ))
}

/// A database of `BIG` objects: all but `open_every`-th one terminal (most
/// picked, some bypassed); of the open ones, every other one assigned.
fn build_big(path: &Path, open_every: u32) -> anyhow::Result<()> {
    let mut s = Store::open(path)?;
    s.set_sync_each_commit(false)?;
    let epoch = s.begin_epoch("1", 0, f64::INFINITY, "bench", &[])?.epoch;
    for k in 0..BIG {
        let at = k as i64 * S / 100;
        s.register(&registration(k, at), at)?;
        if k % open_every == 0 {
            if (k / open_every) % 2 == 1 {
                s.transition(&step(k, 0, epoch), at)?;
            }
        } else if k % 10 < 7 {
            for n in 0..PATH.len() {
                s.transition(&step(k, n, epoch), at)?;
            }
        } else {
            let mut t = step(k, 0, epoch);
            t.new = ObjState::Bypassed;
            s.transition(&t, at)?;
        }
    }
    Ok(())
}

/// Open + integrity check + recovery of a copy of `big`, in ms, and how
/// many open objects it reconciled.
fn recover_ms(big: &Path, dir: &Path) -> anyhow::Result<(f64, usize)> {
    let copy = fresh(dir, "recover.sqlite");
    std::fs::copy(big, &copy)?;
    let t0 = Instant::now();
    let mut s = Store::open(&copy)?;
    let now = BIG as i64 * S / 100;
    let r = s.recover(now, 3.4, "bench")?;
    Ok((t0.elapsed().as_secs_f64() * 1e3, r.open))
}

/// A state_manager process started on a copy of `big`: ms from spawn to
/// the first GetObject answer after configure and activate.
async fn restart_ms(big: &Path, dir: &Path, round: usize) -> anyhow::Result<f64> {
    let copy = fresh(dir, "restart.sqlite");
    std::fs::copy(big, &copy)?;
    let name = format!("state_manager_restart{round}");
    let ctx = r2r::Context::create()?;
    let node = create_node(&ctx, &format!("bench_restart{round}"), "/cell")?;
    let mut spinner = cncpick::kit::spin::Spinner::start(node.clone());
    let c = Clients::new(&node, &name)?;
    let t0 = Instant::now();
    let _server = spawn_server(&copy, &name)?;
    c.bring_up().await?;
    let mut req = GetObject::Request::default();
    req.object_id.uuid = id(1).to_vec();
    let got = c.get.ask(&req, CALL).await?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(got.found, "object 1 missing after the restart");
    spinner.stop();
    Ok(ms)
}

fn main() -> anyhow::Result<()> {
    cncpick::kit::env::require_or_exit();
    cncpick::kit::app::init_tracing_at(Some("warn"));
    let dir = PathBuf::from("target/bench-state");
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let (mut core, mut bare) = (Vec::new(), Vec::new());
    let (mut seq, mut p50, mut p99, mut conc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        core.push(core_rate(&dir)?);
        bare.push(bare_rate(&dir)?);
        let (s, a, b, c) = rt.block_on(end_to_end(&dir, round))?;
        seq.push(s);
        p50.push(a);
        p99.push(b);
        conc.push(c);
        eprintln!(
            "round {round}: core {:.0}/s, bare SQLite {:.0}/s, end to end {s:.0}/s \
             (p50 {a:.2} ms, p99 {b:.2} ms), 16 clients {c:.0}/s",
            core[round], bare[round]
        );
    }

    let t0 = Instant::now();
    let realistic = fresh(&dir, "big-1pct-open.sqlite");
    build_big(&realistic, 100)?;
    let worst = fresh(&dir, "big-all-open.sqlite");
    build_big(&worst, 1)?;
    eprintln!(
        "built the 100k databases in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let (mut rec, mut rec_worst, mut restart) = (Vec::new(), Vec::new(), Vec::new());
    let (mut open_real, mut open_worst) = (0, 0);
    for round in 0..ROUNDS {
        let (ms, n) = recover_ms(&realistic, &dir)?;
        rec.push(ms);
        open_real = n;
        let (ms, n) = recover_ms(&worst, &dir)?;
        rec_worst.push(ms);
        open_worst = n;
        restart.push(rt.block_on(restart_ms(&realistic, &dir, round))?);
        eprintln!(
            "round {round}: recovery {:.0} ms ({open_real} open), all open {:.0} ms, \
             process restart to first answer {:.0} ms",
            rec[round], rec_worst[round], restart[round]
        );
    }
    let bytes = std::fs::metadata(&realistic).map(|m| m.len()).unwrap_or(0);
    let m = |v: &Vec<f64>| quantile(v, 0.5);
    let out = serde_json::json!({
        "rounds": ROUNDS,
        "commits_per_round": OBJECTS * 4,
        "core_transitions_per_s_median": m(&core),
        "end_to_end_transitions_per_s_median": m(&seq),
        "end_to_end_latency_ms_p50_median": m(&p50),
        "end_to_end_latency_ms_p99_median": m(&p99),
        "end_to_end_16_clients_transitions_per_s_median": m(&conc),
        "peer_bare_sqlite_commits_per_s_median": m(&bare),
        "ratio_core_over_bare_sqlite": m(&core) / m(&bare),
        "ratio_end_to_end_over_bare_sqlite": m(&seq) / m(&bare),
        "ratio_end_to_end_16_clients_over_bare_sqlite": m(&conc) / m(&bare),
        "recovery_objects": BIG,
        "recovery_db_mb": bytes as f64 / 1e6,
        "recovery_open_objects": open_real,
        "recovery_ms_median": m(&rec),
        "recovery_all_open_objects": open_worst,
        "recovery_all_open_ms_median": m(&rec_worst),
        "restart_to_first_answer_ms_median": m(&restart),
    });
    println!("{out}");
    Ok(())
}

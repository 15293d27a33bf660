//! Benchmark: do timed-out service calls leak? 10,000 bounded calls against a
//! server that never answers, and 10,000 against no server at all; live heap
//! bytes are counted by a counting allocator after 1,000 and after 10,000
//! calls. Prints one JSON object on its last line. Run with `bench/run kit_calls`.

use cncpick::kit::call::{call, CallError};
use cncpick::kit::spin::{create_node, Spinner};
use cncpick::msgs::srv::GetObject;
use futures::StreamExt;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const CALLS: usize = 10_000;
const CHECKPOINT: usize = 1_000;
const TIMEOUT: Duration = Duration::from_millis(1);

/// Makes CALLS bounded calls; returns (live bytes at CHECKPOINT, at CALLS, seconds, timeouts).
async fn run(client: &r2r::Client<GetObject::Service>, name: &str) -> (isize, isize, f64, usize) {
    let t0 = Instant::now();
    let mut at_checkpoint = 0;
    let mut timeouts = 0;
    for k in 1..=CALLS {
        let r = call(client, name, &GetObject::Request::default(), TIMEOUT).await;
        if matches!(
            r,
            Err(CallError::Timeout { .. } | CallError::Unavailable { .. })
        ) {
            timeouts += 1;
        }
        if k == CHECKPOINT {
            at_checkpoint = LIVE.load(Ordering::Relaxed);
        }
    }
    (
        at_checkpoint,
        LIVE.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        timeouts,
    )
}

fn main() -> anyhow::Result<()> {
    cncpick::kit::env::require_or_exit();
    let ctx = r2r::Context::create()?;
    let node = create_node(&ctx, "bench_kit_calls", "")?;
    let (silent, missing, mut requests) = {
        let mut n = node.lock();
        let q = r2r::QosProfile::services_default();
        (
            n.create_client::<GetObject::Service>("/bench/silent", q.clone())?,
            n.create_client::<GetObject::Service>("/bench/missing", q.clone())?,
            n.create_service::<GetObject::Service>("/bench/silent", q)?,
        )
    };
    let mut spinner = Spinner::start(node.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        // The silent server takes every request and never answers.
        let server = tokio::spawn(async move {
            let mut held = 0usize;
            while let Some(req) = requests.next().await {
                drop(req);
                held += 1;
            }
            held
        });
        r2r::Node::is_available(&silent)?.await?;
        let s = run(&silent, "/bench/silent").await;
        let m = run(&missing, "/bench/missing").await;
        server.abort();
        anyhow::Ok((s, m))
    });
    spinner.stop();
    let ((s1k, s10k, s_secs, s_to), (m1k, m10k, m_secs, m_to)) = result?;
    let per_call = |a: isize, b: isize| (b - a) as f64 / (CALLS - CHECKPOINT) as f64;
    println!("silent server: {s_to}/{CALLS} timed out in {s_secs:.1} s; live heap {s1k} B after {CHECKPOINT}, {s10k} B after {CALLS}");
    println!("no server:     {m_to}/{CALLS} timed out in {m_secs:.1} s; live heap {m1k} B after {CHECKPOINT}, {m10k} B after {CALLS}");
    println!(
        "{}",
        serde_json::json!({
            "bench": "kit_calls",
            "calls": CALLS,
            "timeout_ms": TIMEOUT.as_millis() as u64,
            "silent_server_heap_growth_bytes_per_call": per_call(s1k, s10k),
            "silent_server_timeouts": s_to,
            "no_server_heap_growth_bytes_per_call": per_call(m1k, m10k),
            "no_server_timeouts": m_to,
        })
    );
    Ok(())
}

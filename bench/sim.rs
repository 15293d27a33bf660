//! Benchmark: the simulated cell. (1) The camera renderer at 1280×720 with
//! noise, blur and lighting drift, on one core (OpenCV limited to one
//! thread), against real time at 30 fps. (2) The GRBL emulator's CPU use,
//! from its thread's own CPU clock, idle and while a host streams G-code to
//! it with character counting. Prints one JSON object on its last line.
//! Run with `bench/run sim`.

use cncpick::sim::cell::SimCore;
use cncpick::sim::grbl::machine::Config;
use cncpick::sim::grbl::pty::PtyEmulator;
use cncpick::sim::grbl::settings::Settings;
use cncpick::sim::params::SimParams;
use cncpick::sim::render::Renderer;
use opencv::core::Mat;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds used so far by this process's thread called `name`.
fn thread_cpu_s(name: &str) -> Option<f64> {
    let tick = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the ")" of the command name: utime is 14th, stime 15th overall.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        return Some((utime + stime) / tick);
    }
    None
}

/// CPU seconds used by the calling thread.
fn own_cpu_s() -> f64 {
    let mut ts = std::mem::MaybeUninit::<[i64; 2]>::uninit();
    // clock_gettime(CLOCK_THREAD_CPUTIME_ID = 3)
    unsafe extern "C" {
        fn clock_gettime(clk: i32, tp: *mut [i64; 2]) -> i32;
    }
    unsafe {
        clock_gettime(3, ts.as_mut_ptr());
        let [s, ns] = ts.assume_init();
        s as f64 + ns as f64 / 1e9
    }
}

fn render_rate() -> serde_json::Value {
    opencv::core::set_num_threads(1).expect("opencv threads");
    let p = SimParams {
        arrival_rate_per_min: 300.0,
        ..SimParams::default()
    };
    let cfg = p.config().expect("default params");
    let mut core = SimCore::new(cfg.clone());
    let mut r = Renderer::for_config(&cfg).expect("renderer");
    let mut img = Mat::default();
    let mut fps = Vec::new();
    let mut step_fps = Vec::new();
    let mut in_view = Vec::new();
    let mut k = 300; // 10 s in: the view is full of objects
    for _ in 0..9 {
        let mut render_s = 0.0;
        let t0 = Instant::now();
        for _ in 0..30 {
            let (f, drawn) = core.frame(k);
            in_view.push(drawn.len() as f64);
            let t = Instant::now();
            r.render(k, f.t_s, &drawn, &mut img).expect("render");
            render_s += t.elapsed().as_secs_f64();
            k += 1;
        }
        fps.push(30.0 / render_s);
        step_fps.push(30.0 / t0.elapsed().as_secs_f64());
    }
    // As the sim node renders: the frame prepared while waiting for its
    // exposure, then drawn around the objects after it.
    let (mut prepare_ms, mut after_ms) = (Vec::new(), Vec::new());
    for _ in 0..270 {
        let (f, drawn) = core.frame(k);
        let t = Instant::now();
        r.prepare(k, f.t_s).expect("prepare");
        prepare_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        r.render(k, f.t_s, &drawn, &mut img).expect("render");
        after_ms.push(t.elapsed().as_secs_f64() * 1e3);
        k += 1;
    }
    let render_fps = median(fps);
    serde_json::json!({
        "prepare_ms_median": median(prepare_ms),
        "render_after_exposure_ms_median": median(after_ms),
        "render_fps_median": render_fps,
        "frame_step_fps_median": median(step_fps),
        "real_time_fps": 30.0,
        "render_x_real_time": render_fps / 30.0,
        "objects_drawn_median": median(in_view),
        "resolution": "1280x720",
    })
}

fn emulator_cpu() -> serde_json::Value {
    let mut s = Settings::default();
    for axis in 0..3 {
        s.set(110 + axis, 30000.0);
        s.set(120 + axis, 3000.0);
    }
    let mut emu = PtyEmulator::start(Config::default(), s, 1.0).expect("emulator");
    let mut port = serialport::new(emu.path(), 115_200)
        .timeout(Duration::from_millis(2))
        .open_native()
        .expect("open the PTY");
    std::thread::sleep(Duration::from_millis(200));
    let mut sink = [0u8; 1024];
    let _ = port.read(&mut sink);

    // Idle: nobody writes for 5 s.
    let idle_s = 5.0;
    let c0 = thread_cpu_s("grbl-pty").expect("the emulator thread");
    std::thread::sleep(Duration::from_secs_f64(idle_s));
    let idle = (thread_cpu_s("grbl-pty").unwrap_or(c0) - c0) / idle_s;

    // Streaming: short G1 moves with character counting (128-byte buffer).
    // 0.1 mm moves (each rest to rest, about 12 ms at 3000 mm/s²): the
    // planner stays full and the line never idles.
    let lines: Vec<String> = (0..1500)
        .map(|i| {
            format!(
                "G1X{:.1}Y{:.1}F30000\n",
                (i % 2) as f64 * 0.1,
                (i % 4 / 2) as f64 * 0.1
            )
        })
        .collect();
    let c0 = thread_cpu_s("grbl-pty").unwrap_or(0.0);
    let h0 = own_cpu_s();
    let t0 = Instant::now();
    let (mut sent, mut acked, mut in_flight) = (0usize, 0usize, std::collections::VecDeque::new());
    let mut used = 0usize;
    let mut buf = Vec::new();
    let deadline = t0 + Duration::from_secs(60);
    while acked < lines.len() && Instant::now() < deadline {
        while sent < lines.len() && used + lines[sent].len() <= 127 {
            port.write_all(lines[sent].as_bytes()).expect("write");
            used += lines[sent].len();
            in_flight.push_back(lines[sent].len());
            sent += 1;
        }
        if let Ok(n) = port.read(&mut sink) {
            buf.extend_from_slice(&sink[..n]);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if line.starts_with(b"ok") || line.starts_with(b"error") {
                    used -= in_flight.pop_front().unwrap_or(0);
                    acked += 1;
                }
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let streaming = (thread_cpu_s("grbl-pty").unwrap_or(c0) - c0) / wall;
    let host = (own_cpu_s() - h0) / wall;
    emu.stop();
    serde_json::json!({
        "emulator_idle_cpu_fraction": idle,
        "emulator_streaming_cpu_fraction": streaming,
        "host_streaming_cpu_fraction": host,
        "emulator_over_host_cpu": if host > 0.0 { streaming / host } else { f64::NAN },
        "lines_streamed": acked,
        "lines_per_s": acked as f64 / wall,
    })
}

fn main() {
    let render = render_rate();
    println!("render: {render}");
    let emu = emulator_cpu();
    println!("emulator: {emu}");
    let mut all = render.as_object().cloned().unwrap_or_default();
    all.extend(emu.as_object().cloned().unwrap_or_default());
    all.insert("benchmark".into(), "sim".into());
    println!("{}", serde_json::Value::Object(all));
}

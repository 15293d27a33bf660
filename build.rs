//! Records where the ROS environment came from at build time, and embeds the
//! library directories as RPATH so the binaries start (and can explain a
//! broken environment) even when LD_LIBRARY_PATH was not set.
use std::env;

fn main() {
    println!("cargo:rerun-if-env-changed=CNCPICK_ENV_FILE");
    println!("cargo:rerun-if-env-changed=LD_LIBRARY_PATH");
    println!("cargo:rerun-if-env-changed=ROS_DISTRO");
    let env_file = env::var("CNCPICK_ENV_FILE").unwrap_or_default();
    println!("cargo:rustc-env=CNCPICK_BUILD_ENV_FILE={env_file}");
    println!(
        "cargo:rustc-env=CNCPICK_BUILD_ROS_DISTRO={}",
        env::var("ROS_DISTRO").unwrap_or_default()
    );
    // Only when built from our own env file: a colcon build on a cell computer
    // relies on the sourced ROS setup instead.
    if env_file.is_empty() {
        return;
    }
    if let Ok(paths) = env::var("LD_LIBRARY_PATH") {
        // DT_RPATH (not RUNPATH) so it also serves the libraries' own dependencies.
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
        for dir in paths.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}

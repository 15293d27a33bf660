//! Checks that the ROS 2 environment a node starts in can work, and says
//! what to run when it cannot, instead of failing deep inside rcl.

use std::path::{Path, PathBuf};

/// The distro the binary was built against (recorded by build.rs).
pub const BUILT_FOR_DISTRO: &str = match option_env!("CNCPICK_BUILD_ROS_DISTRO") {
    Some(d) if !d.is_empty() => d,
    _ => "jazzy",
};

/// The env file scripts/bootstrap wrote when this binary was built, if any.
pub const BUILD_ENV_FILE: &str = match option_env!("CNCPICK_BUILD_ENV_FILE") {
    Some(f) => f,
    None => "",
};

/// The highest domain id Fast DDS can turn into port numbers.
pub const MAX_DOMAIN_ID: u32 = 232;

/// Interface packages a cncpick node needs to find through the ament index.
const REQUIRED_PACKAGES: &[&str] = &["cncpick_msgs"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvProblems(pub Vec<String>);

impl std::fmt::Display for EnvProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cncpick: the ROS 2 environment is not usable:")?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        writeln!(
            f,
            "To fix it, start cncpick through the ./cncpick script in the repository, which sets up"
        )?;
        writeln!(f, "and sets the environment itself, or source the env file that scripts/bootstrap writes:")?;
        if BUILD_ENV_FILE.is_empty() {
            write!(f, "  scripts/bootstrap && source .cncpick/env.sh")
        } else {
            write!(
                f,
                "  source {BUILD_ENV_FILE}   (missing? run scripts/bootstrap)"
            )
        }
    }
}

impl std::error::Error for EnvProblems {}

/// Checks the environment given by `var`. Pure: tests pass their own lookup.
pub fn check_with(var: impl Fn(&str) -> Option<String>) -> Result<(), EnvProblems> {
    let mut problems = Vec::new();
    match var("ROS_DISTRO") {
        None => problems.push(format!(
            "ROS_DISTRO is not set (cncpick is built for ROS 2 {BUILT_FOR_DISTRO})"
        )),
        Some(d) if d != BUILT_FOR_DISTRO => problems.push(format!(
            "ROS_DISTRO is \"{d}\", but cncpick is built for \"{BUILT_FOR_DISTRO}\""
        )),
        Some(_) => {}
    }
    if let Some(id) = var("ROS_DOMAIN_ID") {
        // rcl panics inside r2r on a non-number; Fast DDS fails above 232.
        match id.trim().parse::<u32>() {
            Ok(n) if n <= MAX_DOMAIN_ID => {}
            _ => problems.push(format!(
                "ROS_DOMAIN_ID is \"{id}\": it must be a whole number from 0 to {MAX_DOMAIN_ID}"
            )),
        }
    }
    let prefixes: Vec<PathBuf> = var("AMENT_PREFIX_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if prefixes.is_empty() {
        problems.push("AMENT_PREFIX_PATH is not set (no ROS install or overlay is sourced)".into());
    } else {
        for pkg in REQUIRED_PACKAGES {
            if find_package(&prefixes, pkg).is_none() {
                problems.push(format!(
                    "no prefix in AMENT_PREFIX_PATH holds {pkg} (the interface overlay is missing): {}",
                    prefixes
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EnvProblems(problems))
    }
}

/// Checks the process environment.
pub fn check() -> Result<(), EnvProblems> {
    check_with(|k| std::env::var(k).ok())
}

/// The first prefix whose ament index lists `package`.
pub fn find_package(prefixes: &[PathBuf], package: &str) -> Option<PathBuf> {
    prefixes
        .iter()
        .find(|p| index_marker(p, package).is_file())
        .cloned()
}

fn index_marker(prefix: &Path, package: &str) -> PathBuf {
    prefix
        .join("share/ament_index/resource_index/packages")
        .join(package)
}

/// For binaries: check, and on failure print the explanation and exit with 2.
pub fn require_or_exit() {
    if let Err(e) = check() {
        eprintln!("{e}");
        std::process::exit(2);
    }
}

//! Message definitions for MCAP schemas, as rosbag2 stores them
//! (`ros2msg`): the type's own .msg text, then each type it uses, once,
//! after a line of 80 `=` and `MSG: pkg/msg/Type`. They are read from the
//! installed interface packages (`share/<pkg>/msg/<Type>.msg` under each
//! AMENT_PREFIX_PATH entry), so a bag carries the definitions it was
//! recorded with and any reader can decode it without our packages.

use std::collections::BTreeSet;
use std::path::PathBuf;

const PRIMITIVES: [&str; 17] = [
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "string", "wstring", "octet", "float",
];

/// `pkg/msg/Type` from `pkg/Type` or `pkg/msg/Type`.
pub fn normalize(type_name: &str) -> Result<String, String> {
    let parts: Vec<&str> = type_name.split('/').collect();
    match parts.as_slice() {
        [pkg, name] => Ok(format!("{pkg}/msg/{name}")),
        [pkg, "msg", name] => Ok(format!("{pkg}/msg/{name}")),
        _ => Err(format!(
            "{type_name:?} is not a message type (write pkg/msg/Type)"
        )),
    }
}

/// The .msg file of `pkg/msg/Type` under the given install prefixes.
fn msg_file(prefixes: &[PathBuf], type_name: &str) -> Result<PathBuf, String> {
    let full = normalize(type_name)?;
    let mut it = full.split('/');
    let (pkg, name) = (it.next().unwrap_or(""), it.nth(1).unwrap_or(""));
    prefixes
        .iter()
        .map(|p| p.join("share").join(pkg).join("msg").join(format!("{name}.msg")))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("no definition of {full}: share/{pkg}/msg/{name}.msg is under no AMENT_PREFIX_PATH entry")
        })
}

/// The message types a .msg text uses (fields, not constants), as
/// `pkg/msg/Type`; bare names are in `pkg`.
pub fn field_types(text: &str, pkg: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let (Some(ty), Some(rest)) = (words.next(), words.next()) else {
            continue;
        };
        let after_type = line[ty.len()..].split('"').next().unwrap_or("");
        if rest.is_empty() || after_type.contains('=') {
            continue; // a constant
        }
        let base = ty.split('[').next().unwrap_or(ty);
        let base = base.split("<=").next().unwrap_or(base);
        if PRIMITIVES.contains(&base) {
            continue;
        }
        let full = if base.contains('/') {
            match normalize(base) {
                Ok(f) => f,
                Err(_) => continue,
            }
        } else if base == "Header" {
            "std_msgs/msg/Header".to_string()
        } else {
            format!("{pkg}/msg/{base}")
        };
        out.push(full);
    }
    out
}

/// The install prefixes from AMENT_PREFIX_PATH.
pub fn prefixes_from_env() -> Vec<PathBuf> {
    std::env::var("AMENT_PREFIX_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// The full `ros2msg` schema of `type_name`, as rosbag2 writes it.
pub fn definition(prefixes: &[PathBuf], type_name: &str) -> Result<String, String> {
    let root = normalize(type_name)?;
    let read = |t: &str| -> Result<String, String> {
        let path = msg_file(prefixes, t)?;
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut text = read(&root)?;
    let mut seen = BTreeSet::from([root.clone()]);
    let mut queue: Vec<String> = field_types(&text, pkg_of(&root));
    let mut deps = Vec::new();
    while let Some(t) = (!queue.is_empty()).then(|| queue.remove(0)) {
        if !seen.insert(t.clone()) {
            continue;
        }
        let body = read(&t)?;
        queue.extend(field_types(&body, pkg_of(&t)));
        deps.push((t, body));
    }
    for (t, body) in deps {
        text.push_str(&format!("\n{}\nMSG: {t}\n{body}", "=".repeat(80)));
    }
    Ok(text)
}

fn pkg_of(full: &str) -> &str {
    full.split('/').next().unwrap_or("")
}

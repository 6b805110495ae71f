pub mod pool;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod sim;
pub mod solve;
pub mod trace;

use std::path::PathBuf;

/// `../shared/traces` next to the workspace, or `$BERTH_TRACES_DIR`.
pub fn default_traces_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BERTH_TRACES_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

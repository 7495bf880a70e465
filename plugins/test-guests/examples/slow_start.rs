//! Deadline case across instantiation: `configure` busy-waits for option
//! `configure_ms` milliseconds, then `wrap(key_id)` for `key_id`
//! milliseconds. One deadline covers both.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider};
use std::time::{Duration, Instant};

fn busy(ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

struct SlowStart;
impl Provider for SlowStart {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("slow_start")
    }
    fn configure(options: &mut Options) -> Result<Self> {
        busy(options.u64("configure_ms", 0)?);
        Ok(SlowStart)
    }
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        busy(key_id.parse().unwrap_or(0));
        Ok(plaintext.to_vec())
    }
}
export_provider!(SlowStart);

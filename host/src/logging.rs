//! How kmshost logs: the filter an admin asks for, with the guest-output
//! tracing of Wasmtime's WASI crates held at `info` whatever is asked —
//! at `debug` they print every byte a plugin writes to stdout, past the
//! host's own cap ([`crate::sandbox::state::CAPTURE_BYTES`]) and escaping
//! ([`crate::sandbox::plugin_text`]) — and colour only on a terminal.

use tracing_subscriber::EnvFilter;

/// Crates whose tracing can carry what a plugin wrote: never below `info`.
pub const GUEST_OUTPUT_TARGETS: &[&str] = &["wasmtime_wasi", "wasmtime_wasi_http"];

/// The filter for `spec` (`info`, `kmshost=debug`, …), with
/// [`GUEST_OUTPUT_TARGETS`] held at `info`.
pub fn filter(spec: &str) -> EnvFilter {
    let mut f = EnvFilter::new(spec);
    for target in GUEST_OUTPUT_TARGETS {
        if let Ok(d) = format!("{target}=info").parse() {
            f = f.add_directive(d);
        }
    }
    f
}

/// Installs the process's subscriber: [`filter`] of `spec`, to stderr,
/// coloured only when stderr is a terminal.
pub fn init(spec: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter(spec))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

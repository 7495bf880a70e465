//! What the `kmshost` command does beyond parsing its arguments: reading
//! and writing keys at the terminal ([`key_io`]) and the `plugins` report
//! ([`report`]). The CSI client is [`crate::csi::client`]; the driver's
//! wiring is [`crate::csi::run_driver`].

pub mod key_io;
pub mod report;
pub mod scaffold;

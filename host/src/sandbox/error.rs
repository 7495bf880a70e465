//! The sandbox's errors: why a plugin could not be loaded or why a call
//! into it failed. The facade maps [`PluginError`] to
//! [`crate::kms::KmsError`], adding the kmsID.

/// Why the sandbox stopped a plugin call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxCause {
    /// The call ran past its deadline.
    #[error("deadline of {0} ms exceeded")]
    Deadline(u64),
    /// The plugin tried to grow its memory past the cap.
    #[error("memory limit of {0} bytes exceeded")]
    Memory(usize),
    /// The plugin exhausted its stack.
    #[error("stack exhausted")]
    StackOverflow,
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access).
    #[error("trapped: {0}")]
    Trap(String),
    /// No sandbox slot was free.
    #[error("too many concurrent plugin instances")]
    Capacity,
    /// The plugin hit a cap on what it can make the host hold (resource
    /// handles, header bytes).
    #[error("host resource limit reached: {0}")]
    HostLimit(String),
    /// The kmsID's own concurrency limit was reached and no call finished
    /// before this one's deadline.
    #[error(
        "the kmsID already runs its limit of {0} concurrent calls (kmshostMaxConcurrency) and none finished before this call's deadline"
    )]
    Busy(u32),
}

impl SandboxCause {
    /// A short, stable word for the cause (metrics and audit):
    /// `deadline`, `memory`, `stack`, `trap`, `capacity`, `host-limit`,
    /// `busy`.
    pub fn class(&self) -> &'static str {
        match self {
            SandboxCause::Deadline(_) => "deadline",
            SandboxCause::Memory(_) => "memory",
            SandboxCause::StackOverflow => "stack",
            SandboxCause::Trap(_) => "trap",
            SandboxCause::Capacity => "capacity",
            SandboxCause::HostLimit(_) => "host-limit",
            SandboxCause::Busy(_) => "busy",
        }
    }
}

/// The kind of failure a plugin reported (the WIT `kms-error` cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// The key does not exist.
    NotFound,
    /// Credentials or permission refused, or a capability denied.
    Denied,
    /// A transient backend failure.
    Unavailable,
    /// `unavailable`, after a host timeout (a TLS stream's read or write
    /// timeout) passed in the call.
    TimedOut,
    /// The plugin does not offer the operation.
    Unsupported,
    /// A wrapped key failed authentication.
    Integrity,
    /// Anything else.
    Other,
}

/// A failed load or call. Every string that came from the plugin is
/// already capped and escaped ([`super::plugin_text`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The plugin answered with an error.
    #[error("{message}")]
    Reported {
        /// What kind of failure.
        kind: Reported,
        /// The plugin's words, with the host's denials appended.
        message: String,
    },
    /// `configure` refused one of the kmsID's options.
    #[error("option {option}: {message}")]
    InvalidOption {
        /// The option at fault.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The sandbox stopped the plugin.
    #[error("plugin {plugin} stopped: {cause}")]
    Stopped {
        /// The plugin name.
        plugin: String,
        /// The root cause.
        cause: SandboxCause,
    },
    /// The plugin could not be loaded (not a component, hash mismatch,
    /// incompatible world, unknown imports).
    #[error("cannot load plugin: {0}")]
    Load(String),
}

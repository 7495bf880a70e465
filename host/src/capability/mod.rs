//! What a kmsID's plugin may touch beyond its own memory: outbound endpoints
//! ([`allow_list`]), the TLS identity used to reach them ([`tls`]), and the
//! secrets granted to it (see [`crate::secrets::Grants`]).

pub mod allow_list;
pub mod tls;

pub use allow_list::{AllowList, AllowedHost, Denial, Target};
pub use tls::TlsSettings;

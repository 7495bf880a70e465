//! What a kmsID's plugin may touch beyond its own memory, and how the host
//! reaches it on the plugin's behalf: the outbound-HTTP policy ([`http`]:
//! one object per kmsID, one enforcement point per resource, shared by
//! both guest exits), the endpoints it may reach ([`allow_list`]), the TLS
//! identity used ([`tls`]), the connections themselves ([`net`]), and TLS
//! byte streams for protocols other than HTTP ([`stream`]).
//! Secrets granted to a kmsID are [`crate::secrets::Grants`].

pub mod allow_list;
pub mod hsm;
pub mod http;
pub mod net;
pub mod signing;
pub mod stream;
pub mod tls;

pub use allow_list::{AllowList, AllowedHost, Denial, Target};
pub use tls::TlsSettings;

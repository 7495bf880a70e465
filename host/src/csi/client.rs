//! A small CSI client over the unix socket, for `kmshost volume ...` (what
//! a CO would send, one call at a time).

use super::grpc::{
    controller_client::ControllerClient,
    encryption_key_rotation_controller_client::EncryptionKeyRotationControllerClient,
    identity_client::IdentityClient, node_client::NodeClient,
};
use super::proto::{self, volume_capability};
use super::{CsiError, unix_channel};
use tonic::transport::Channel;

/// Clients of every service on one channel.
#[derive(Debug, Clone)]
pub struct Client {
    /// Identity.
    pub identity: IdentityClient<Channel>,
    /// Controller.
    pub controller: ControllerClient<Channel>,
    /// Node.
    pub node: NodeClient<Channel>,
    /// csi-addons key rotation.
    pub rotation: EncryptionKeyRotationControllerClient<Channel>,
}

/// A block or mount capability with single-node-writer access.
pub fn capability(block: bool, fs_type: &str) -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(if block {
            volume_capability::AccessType::Block(volume_capability::BlockVolume {})
        } else {
            volume_capability::AccessType::Mount(volume_capability::MountVolume {
                fs_type: fs_type.into(),
                ..Default::default()
            })
        }),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::Mode::SingleNodeWriter as i32,
        }),
    }
}

/// Parses a size: bytes, or with a `Ki`/`Mi`/`Gi`/`Ti` (or `K`/`M`/`G`/`T`,
/// also powers of two) suffix.
pub fn parse_size(s: &str) -> Result<u64, CsiError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| CsiError::invalid(format!("size {s:?}")))?;
    let shift = match unit.trim_end_matches('i').trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(CsiError::invalid(format!(
                "size {s:?}: unknown unit {unit:?}"
            )));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| CsiError::invalid(format!("size {s:?} is too large")))
}

impl Client {
    /// Connects to `endpoint` (`unix:///path`).
    pub async fn connect(endpoint: &str) -> Result<Self, CsiError> {
        let ch = unix_channel(endpoint).await?;
        Ok(Client {
            identity: IdentityClient::new(ch.clone()),
            controller: ControllerClient::new(ch.clone()),
            node: NodeClient::new(ch.clone()),
            rotation: EncryptionKeyRotationControllerClient::new(ch),
        })
    }
}

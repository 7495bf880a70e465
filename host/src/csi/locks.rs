//! Per-volume locks: a second call on a volume that has one in progress
//! gets `Aborted` at once (the CO retries later) — calls never interleave.

use super::CsiError;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The set of volume (and snapshot) IDs with a call in progress.
#[derive(Debug, Default)]
pub struct VolumeLocks {
    busy: Mutex<HashSet<String>>,
}

/// Held while a call works on one ID; released on drop.
#[derive(Debug)]
pub struct VolumeGuard {
    locks: Arc<VolumeLocks>,
    id: String,
}

impl VolumeLocks {
    /// Takes the lock on `id`, or fails with `Aborted`.
    pub fn try_lock(self: &Arc<Self>, id: &str) -> Result<VolumeGuard, CsiError> {
        if !self.busy.lock().unwrap().insert(id.to_string()) {
            tracing::debug!(volume = id, "refused: an operation is already in progress");
            return Err(CsiError::new(
                tonic::Code::Aborted,
                format!("an operation on {id} is already in progress"),
            ));
        }
        Ok(VolumeGuard {
            locks: self.clone(),
            id: id.to_string(),
        })
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        self.locks.busy.lock().unwrap().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_caller_is_aborted_until_the_first_is_done() {
        let l = Arc::new(VolumeLocks::default());
        let g = l.try_lock("v1").unwrap();
        assert_eq!(l.try_lock("v1").unwrap_err().code, tonic::Code::Aborted);
        let _other = l.try_lock("v2").unwrap();
        drop(g);
        l.try_lock("v1").unwrap();
    }
}

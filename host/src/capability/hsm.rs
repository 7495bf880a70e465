//! The HSM capability: PKCS#11 modules, tokens, keys and sessions, all in
//! the host. A plugin never loads a native library, never sees a PIN and
//! never holds a key handle; it names a key by label and gets bytes back.
//!
//! * **Modules** are the node's: the host is started with the modules it
//!   may load (`name=path`, [`HsmModules`]); a kmsID names one by name, so a
//!   ConfigMap can never make the host load a library of its choosing.
//! * **Tokens** are selected by label (slot numbers change when a token is
//!   initialised) and logged into as the user with a PIN the host reads.
//! * **Keys** are AES secret keys found by label; only the labels granted to
//!   the kmsID are looked up ([`HsmToken::encrypt`] takes the label the
//!   caller checked).
//! * **Operations**: AES-GCM with a fresh 96-bit IV from the host and the
//!   caller's AAD (the volume ID), the IV prepended to the output. The key
//!   never leaves the token.
//! * **Sessions** are pooled per token and reopened once after a token reset
//!   (session handle invalid, token removed, logged out).
//!
//! Calls are blocking, as PKCS#11 is: callers run them on a blocking thread.

use crate::types::SecretBytes;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Length of the AES-GCM IV kmshost generates.
pub const IV_BYTES: usize = 12;
/// Length of the AES-GCM tag.
pub const TAG_BYTES: usize = 16;
/// Sessions kept open per token.
pub const MAX_IDLE_SESSIONS: usize = 8;

/// Why an HSM operation failed. Messages name the module, token and key
/// label; never the PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HsmError {
    /// The module is not one the host was started with.
    #[error(
        "PKCS#11 module {0:?} is not one this host may load (start kmshost with --pkcs11-module {0}=/path/to/module.so)"
    )]
    ModuleNotAllowed(String),
    /// The module could not be loaded or initialised.
    #[error("PKCS#11 module {module}: {message}")]
    Module {
        /// The module's name.
        module: String,
        /// What went wrong.
        message: String,
    },
    /// No slot holds a token with this label.
    #[error("PKCS#11 module {module}: no token labelled {token:?}")]
    TokenNotFound {
        /// The module.
        module: String,
        /// The token label.
        token: String,
    },
    /// The PIN was refused, or the key may not be used so.
    #[error("PKCS#11 token {token:?}: {message}")]
    Denied {
        /// The token label.
        token: String,
        /// What was refused.
        message: String,
    },
    /// No usable AES key has this label (or more than one has).
    #[error("PKCS#11 token {token:?}: {message}")]
    KeyNotFound {
        /// The token label.
        token: String,
        /// Which label, and why.
        message: String,
    },
    /// The ciphertext was altered, or sealed with another key or AAD.
    #[error(
        "PKCS#11 token {token:?}, key {label:?}: the ciphertext does not authenticate (altered, or for another key or volume)"
    )]
    Integrity {
        /// The token label.
        token: String,
        /// The key label.
        label: String,
    },
    /// The token is absent or failed transiently.
    #[error("PKCS#11 token {token:?}: {message}")]
    Unavailable {
        /// The token label.
        token: String,
        /// What failed.
        message: String,
    },
}

impl HsmError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HsmError::Unavailable { .. })
    }
}

/// The modules this host may load, by name.
#[derive(Default)]
pub struct HsmModules {
    allowed: HashMap<String, PathBuf>,
}

/// Every module loaded in this process, by path: initialised once and never
/// finalised (PKCS#11 state is per process, and finalising while another
/// user holds sessions would pull the library out from under it).
fn loaded() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static LOADED: std::sync::OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> =
        std::sync::OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl std::fmt::Debug for HsmModules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmModules")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl HsmModules {
    /// The modules the host may load, from `name=path` pairs (the
    /// `--pkcs11-module` flags).
    pub fn parse<'a>(specs: impl IntoIterator<Item = &'a str>) -> Result<HsmModules, String> {
        let mut allowed = HashMap::new();
        for spec in specs {
            let (name, path) = spec.split_once('=').ok_or_else(|| {
                format!("--pkcs11-module {spec:?}: write name=/path/to/module.so")
            })?;
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
            if !valid || !path.starts_with('/') {
                return Err(format!(
                    "--pkcs11-module {spec:?}: the name is letters, digits, '-', '_' and the path absolute"
                ));
            }
            if allowed
                .insert(name.to_string(), PathBuf::from(path))
                .is_some()
            {
                return Err(format!("--pkcs11-module {name} is given twice"));
            }
        }
        Ok(HsmModules { allowed })
    }

    /// The module's names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.allowed.keys().map(String::as_str).collect();
        n.sort_unstable();
        n
    }

    /// The loaded, initialised module `name`.
    fn context(&self, name: &str) -> Result<Pkcs11, HsmError> {
        let path = self
            .allowed
            .get(name)
            .ok_or_else(|| HsmError::ModuleNotAllowed(name.to_string()))?;
        let mut loaded = loaded().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = loaded.get(path) {
            return Ok(c.clone());
        }
        let err = |message: String| HsmError::Module {
            module: name.to_string(),
            message,
        };
        let ctx = Pkcs11::new(path).map_err(|e| err(format!("loading {}: {e}", path.display())))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(err(format!("initialising: {e}"))),
        }
        loaded.insert(path.clone(), ctx.clone());
        Ok(ctx)
    }

    /// A handle on token `token` of module `module`, logged in with `pin`
    /// at first use.
    pub fn token(&self, module: &str, token: &str, pin: SecretBytes) -> Result<HsmToken, HsmError> {
        Ok(HsmToken {
            ctx: self.context(module)?,
            module: module.to_string(),
            label: token.to_string(),
            pin,
            idle: Mutex::new(Vec::new()),
        })
    }
}

/// One token of one module, with its pool of logged-in sessions.
pub struct HsmToken {
    ctx: Pkcs11,
    module: String,
    label: String,
    pin: SecretBytes,
    idle: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for HsmToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmToken")
            .field("module", &self.module)
            .field("token", &self.label)
            .field("pin", &"REDACTED")
            .finish_non_exhaustive()
    }
}

/// Whether a failure means the session (not the request) is gone.
fn session_lost(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::TokenNotPresent
                | RvError::DeviceRemoved
                | RvError::UserNotLoggedIn
                | RvError::DeviceError,
            _
        )
    )
}

impl HsmToken {
    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Idle sessions kept now.
    pub fn idle_sessions(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn unavailable(&self, message: String) -> HsmError {
        HsmError::Unavailable {
            token: self.label.clone(),
            message,
        }
    }

    /// A new logged-in session on the token with this label.
    fn open(&self) -> Result<Session, HsmError> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| self.unavailable(format!("listing slots: {e}")))?;
        let slot = slots
            .into_iter()
            .find(|s| {
                self.ctx
                    .get_token_info(*s)
                    .is_ok_and(|i| i.label().trim_end() == self.label)
            })
            .ok_or_else(|| HsmError::TokenNotFound {
                module: self.module.clone(),
                token: self.label.clone(),
            })?;
        let session = self
            .ctx
            .open_rw_session(slot)
            .map_err(|e| self.unavailable(format!("opening a session: {e}")))?;
        let pin = std::str::from_utf8(self.pin.expose()).map_err(|_| HsmError::Denied {
            token: self.label.clone(),
            message: "the PIN is not UTF-8 text".into(),
        })?;
        let pin = AuthPin::from(pin.trim_end_matches(['\r', '\n']).to_string());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(P11Error::Pkcs11(
                rv @ (RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinExpired
                | RvError::PinLocked),
                _,
            )) => Err(HsmError::Denied {
                token: self.label.clone(),
                message: format!("login refused: {rv:?}"),
            }),
            Err(e) => Err(self.unavailable(format!("login: {e}"))),
        }
    }

    /// Runs `f` on a pooled session; a session the token lost is replaced
    /// once and `f` tried again.
    fn with_session<T>(
        &self,
        f: impl Fn(&Session) -> Result<T, P11Error>,
        map: impl Fn(P11Error) -> HsmError,
    ) -> Result<T, HsmError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let (session, fresh) = match pooled {
            Some(s) => (s, false),
            None => (self.open()?, true),
        };
        let (session, r) = match f(&session) {
            Err(e) if session_lost(&e) && !fresh => {
                drop(session);
                let s = self.open()?;
                let r = f(&s);
                (s, r)
            }
            r => (session, r),
        };
        match r {
            Ok(v) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE_SESSIONS {
                    idle.push(session);
                }
                Ok(v)
            }
            Err(e) if session_lost(&e) => Err(self.unavailable(format!("{e}"))),
            Err(e) => Err(map(e)),
        }
    }

    /// The one AES secret key labelled `label`.
    fn key(&self, session: &Session, label: &str) -> Result<ObjectHandle, P11Error> {
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        match found.as_slice() {
            [one] => Ok(*one),
            _ => Err(P11Error::Pkcs11(
                RvError::KeyHandleInvalid,
                cryptoki::context::Function::FindObjects,
            )),
        }
    }

    fn key_error(&self, label: &str, e: P11Error) -> HsmError {
        match e {
            P11Error::Pkcs11(RvError::KeyHandleInvalid, _) => HsmError::KeyNotFound {
                token: self.label.clone(),
                message: format!("no single AES key labelled {label:?}"),
            },
            P11Error::Pkcs11(
                rv @ (RvError::KeyFunctionNotPermitted
                | RvError::KeyTypeInconsistent
                | RvError::MechanismInvalid),
                _,
            ) => HsmError::Denied {
                token: self.label.clone(),
                message: format!("key {label:?} may not be used for AES-GCM: {rv:?}"),
            },
            e => self.unavailable(format!("key {label:?}: {e}")),
        }
    }

    /// AES-GCM under the key `label` with `aad`: IV (12 bytes) ‖ ciphertext
    /// ‖ tag.
    pub fn encrypt(&self, label: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut iv = [0u8; IV_BYTES];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut iv);
        let sealed = self.with_session(
            |s| {
                let key = self.key(s, label)?;
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, aad, ((TAG_BYTES * 8) as u64).into())?;
                s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
            },
            |e| self.key_error(label, e),
        )?;
        Ok([&iv[..], &sealed].concat())
    }

    /// Reverses [`Self::encrypt`]; a blob altered, or sealed under another
    /// key or AAD, is an integrity failure.
    pub fn decrypt(&self, label: &str, blob: &[u8], aad: &[u8]) -> Result<SecretBytes, HsmError> {
        let integrity = || HsmError::Integrity {
            token: self.label.clone(),
            label: label.to_string(),
        };
        if blob.len() < IV_BYTES + TAG_BYTES {
            return Err(integrity());
        }
        let (iv, sealed) = blob.split_at(IV_BYTES);
        let plain = self.with_session(
            |s| {
                let key = self.key(s, label)?;
                let mut iv: [u8; IV_BYTES] = iv.try_into().expect("split at IV_BYTES");
                let params = GcmParams::new(&mut iv, aad, ((TAG_BYTES * 8) as u64).into())?;
                s.decrypt(&Mechanism::AesGcm(params), key, sealed)
            },
            |e| match e {
                P11Error::Pkcs11(
                    RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                    _,
                ) => integrity(),
                // SoftHSM2 (and some HSMs) report a failed GCM tag check as
                // CKR_GENERAL_ERROR from C_Decrypt: the key was found, so
                // the data is what failed.
                P11Error::Pkcs11(RvError::GeneralError, cryptoki::context::Function::Decrypt) => {
                    integrity()
                }
                e => self.key_error(label, e),
            },
        )?;
        Ok(SecretBytes::new(plain))
    }

    /// Generates a non-extractable AES-256 key labelled `label` on the token
    /// (for admins and tests; a plugin cannot create keys).
    pub fn generate_aes(&self, label: &str) -> Result<(), HsmError> {
        self.with_session(
            |s| {
                s.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Label(label.as_bytes().to_vec()),
                        Attribute::ValueLen(32.into()),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                    ],
                )
                .map(drop)
            },
            |e| self.unavailable(format!("generating key {label:?}: {e}")),
        )
    }
}

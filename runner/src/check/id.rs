//! Instance ids: `<check>:<16 hex digits>`, a keyed hash of the instance's resolved config.
//!
//! An id must stay the same while its config does, across reloads and restarts: it keys the
//! instance's schedule, its rate and counter state, and its key-value store on disk (the chef
//! check's last report read). It is also shown everywhere (`/status`, logs, the plugin's own
//! context), and the config it is hashed from holds credentials. A plain hash of the config
//! would let anyone who reads `/status` test guesses of a password offline, one hash per
//! guess, with every other key of a Datadog config easy to guess; so the hash is an
//! HMAC-SHA-256 under a random 256-bit key that never leaves the host.
//!
//! The key is per install, not per process: it is kept in `<plugins.state_path>/instance-id.key`
//! (made on first start, readable by the runner's user only), beside the key-value stores it
//! keeps valid, so an unchanged instance keeps its id and its stored state across restarts, as
//! before. Without a state directory (`state_path: null`, or one that cannot be written), the
//! key lives only as long as the process: nothing that outlives the process is keyed by the ids
//! then anyway. `runner test-check` reads the same key, so it sees the running runner's ids.
//!
//! The key is process-wide ([`use_key_from`] once at start-up, before any config is read)
//! rather than passed down through the conf.d loader and discovery: every id in one process
//! must come from one key, or discovery's reconciliation by id would see every instance change.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The file, under the state directory, that holds the install's key, in hex.
pub(crate) const KEY_FILE: &str = "instance-id.key";

static KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Hashes instance ids with the install's key in `state_path` (made when missing), or with a
/// key of this process alone when there is none or it cannot be used. Call it before any
/// instance is built; later calls change nothing.
pub fn use_key_from(state_path: Option<&Path>) {
    let key = match state_path.map(load_or_create) {
        Some(Ok(key)) => key,
        Some(Err(error)) => {
            tracing::warn!(path = %state_path.unwrap_or(Path::new("")).join(KEY_FILE).display(), %error, "instance ids will change at the next start: cannot keep their key");
            random_key()
        }
        None => random_key(),
    };
    let _ = KEY.set(key);
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

fn load_or_create(dir: &Path) -> std::io::Result<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut key = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not 64 hex digits: remove it to make a new key",
                )
            })?;
            Ok(key)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            let key = random_key();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(mut file) => {
                    file.write_all(hex::encode(key).as_bytes())?;
                    file.sync_all()?;
                    Ok(key)
                }
                // Another process (a `test-check` beside the runner) made it first: use theirs.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create(dir)
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

/// `<check>:<16 hex digits>` of the check name and its resolved configuration, under the key.
pub(crate) fn instance_id(check: &str, config: &str, init_config: &str) -> String {
    let key = KEY.get_or_init(random_key);
    let mut message = Vec::with_capacity(check.len() + config.len() + init_config.len() + 3);
    for part in [check, config, init_config] {
        message.extend_from_slice(part.as_bytes());
        message.push(0);
    }
    let digest = hmac_sha256(key, &message);
    format!("{check}:{}", hex::encode(&digest[..8]))
}

/// HMAC-SHA-256 (RFC 2104) for a key no longer than the hash's 64-byte block.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    debug_assert!(key.len() <= BLOCK);
    let mut padded = [0u8; BLOCK];
    padded[..key.len()].copy_from_slice(key);
    let inner = Sha256::new()
        .chain_update(padded.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(padded.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn instance_id_is_stable_and_follows_config() {
        let a = instance_id("c", r#"{"a":1}"#, "null");
        assert_eq!(a, instance_id("c", r#"{"a":1}"#, "null"));
        assert_ne!(a, instance_id("c", r#"{"a":2}"#, "null"));
        assert_eq!(a.len(), "c:".len() + 16);
    }

    #[test]
    fn instance_id_is_not_the_plain_hash_of_the_config() {
        let config = r#"{"host":"db","password":"hunter2"}"#;
        let mut plain = Sha256::new();
        for part in ["postgres", config, "null"] {
            plain.update(part.as_bytes());
            plain.update([0]);
        }
        let plain = format!("postgres:{}", hex::encode(&plain.finalize()[..8]));
        assert_ne!(instance_id("postgres", config, "null"), plain);
    }

    #[test]
    fn the_key_is_kept_in_the_state_directory_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let made = load_or_create(&state).expect("a new key");
        assert_eq!(load_or_create(&state).expect("the same key"), made);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(state.join(KEY_FILE))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(state.join(KEY_FILE), "not hex").expect("spoil it");
        assert!(load_or_create(&state).is_err());
    }
}

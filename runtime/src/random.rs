//! Randomness for secrets (setup keys, nonces, codes, salts, session IDs): the operating
//! system's RNG only, and a failure to read it is an error, never a weaker fallback.

/// The OS RNG could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(#[from] rand::rngs::SysError);

/// Fills `buf` from the OS RNG.
///
/// # Errors
/// [`RandomError`] when the OS RNG fails.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, buf)?;
    Ok(())
}

/// `N` bytes from the OS RNG.
///
/// # Errors
/// [`RandomError`] when the OS RNG fails.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0_u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// A base64 secret of `len` random bytes kept in `path`, created on first use: readable by
/// its owner only from its first byte (mode 0600 at creation, never a chmod later), and
/// written whole under a temporary name before it is linked into place, so a replica
/// starting at the same moment either links its own or reads the complete secret of the
/// first, never half of one.
///
/// # Errors
/// The file cannot be read or written, or the OS RNG fails.
pub fn read_or_create_secret_file(
    path: &std::path::Path,
    len: usize,
) -> Result<zeroize::Zeroizing<String>, SecretFileError> {
    use base64::Engine as _;
    use std::io::Write as _;

    let io = |source| SecretFileError::Io {
        path: path.to_owned(),
        source,
    };
    let read = || {
        std::fs::read_to_string(path)
            .map(|text| zeroize::Zeroizing::new(text.trim().to_owned()))
            .map_err(io)
    };
    match std::fs::metadata(path) {
        Ok(_) => return read(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut raw = zeroize::Zeroizing::new(vec![0_u8; len]);
    fill(&mut raw)?;
    let encoded =
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw.as_slice()));
    let mut temporary = path.as_os_str().to_owned();
    // Unique per attempt, so concurrent creators (processes or threads) never share one.
    let nonce: [u8; 8] = bytes()?;
    temporary.push(format!(".{}.tmp", u64::from_le_bytes(nonce)));
    let temporary = std::path::PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(encoded.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "created a new secret file");
            Ok(encoded)
        }
        // Somebody else linked theirs first: theirs is the secret.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(),
        Err(e) => Err(io(e)),
    }
}

/// Why a secret file could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("secret file {path}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Random(#[from] RandomError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_private_from_birth_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/key");
        let first = read_or_create_secret_file(&path, 32).unwrap();
        assert_eq!(first.len(), 44, "32 bytes in base64");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = read_or_create_secret_file(&path, 32).unwrap();
        assert_eq!(*first, *again, "a second start must not replace the secret");
    }

    #[test]
    fn replicas_starting_together_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        let secrets: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| read_or_create_secret_file(&path, 32).unwrap().to_string()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            secrets.iter().all(|s| s == &secrets[0] && s.len() == 44),
            "{secrets:?}"
        );
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files were left behind");
    }

    #[test]
    fn two_draws_differ_and_fill_every_byte_position() {
        let a = bytes::<32>().unwrap();
        let b = bytes::<32>().unwrap();
        assert_ne!(a, b, "two 256-bit draws collided");
        // Over 64 draws every position takes several values: nothing is left zeroed.
        let mut seen = vec![std::collections::BTreeSet::new(); 32];
        for _ in 0..64 {
            for (i, byte) in bytes::<32>().unwrap().iter().enumerate() {
                seen[i].insert(*byte);
            }
        }
        assert!(seen.iter().all(|values| values.len() > 8));
    }
}

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
/// its owner only from the moment it exists (mode 0600 at creation, never a chmod later).
/// Replicas starting together agree on one secret: only one creation can win.
///
/// # Errors
/// The file cannot be read or written, or the OS RNG fails.
pub fn read_or_create_secret_file(
    path: &std::path::Path,
    len: usize,
) -> Result<zeroize::Zeroizing<String>, SecretFileError> {
    use base64::Engine as _;
    use std::io::Write as _;

    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|text| zeroize::Zeroizing::new(text.trim().to_owned()))
            .map_err(|source| SecretFileError::Io {
                path: path.to_owned(),
                source,
            })
    };
    if path.exists() {
        return read(path);
    }
    let io = |source| SecretFileError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut raw = zeroize::Zeroizing::new(vec![0_u8; len]);
    fill(&mut raw)?;
    let encoded =
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw.as_slice()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(encoded.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::warn!(path = %path.display(), "created a new secret file");
            Ok(encoded)
        }
        // Somebody else created it first: theirs is the secret.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
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

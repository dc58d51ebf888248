//! Development secrets: generated once, kept in files only their owner can read.

use std::path::Path;

use anyhow::Context as _;
use data_encoding::BASE64;

/// A base64 random secret of `bytes` bytes kept in `path` (mode 0600), created on first use.
///
/// # Errors
/// The file cannot be read or written, or the OS has no randomness.
pub fn read_or_create(path: &Path, bytes: usize) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(existing.trim().to_owned());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut raw = zeroize::Zeroizing::new(vec![0_u8; bytes]);
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut raw)
        .map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    let encoded = BASE64.encode(&raw);
    std::fs::write(path, &encoded).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(encoded)
}

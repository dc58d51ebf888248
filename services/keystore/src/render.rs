//! How a revealed key is shown: its otpauth URI and, only when the caller asks for them,
//! the URI as a QR code in PNG and SVG.
//!
//! Encoding a QR code is most of the cost of showing a key, and most of that is choosing
//! the mask: the encoder draws the code under each of the eight patterns the standard
//! defines and scores each for scanning hazards. The choice depends only on the URI, so
//! [`MaskMemo`] remembers it per key, which makes every view after a key's first one skip
//! the scoring. It remembers no secret: see [`MaskMemo`].

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use qrcode::canvas::{Canvas, MaskPattern};
use qrcode::render::{Renderer, svg};
use qrcode::{Color, EcLevel};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::service::RevealedKey;

/// Which of a key's costly forms to produce; the Base32 text and otpauth URI always are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forms {
    pub qr_png: bool,
    pub qr_svg: bool,
}

impl Forms {
    /// Every form: what `Enroll` and `RotateKey` return, and `GetCurrentKey` when the
    /// caller names none.
    pub const ALL: Self = Self {
        qr_png: true,
        qr_svg: true,
    };

    /// The forms a `GetCurrentKeyRequest` names (`kagi.v1.KeyForm` numbers): an empty list
    /// is every form, as before callers could choose; numbers this keystore does not know
    /// (a newer caller's) add nothing.
    pub fn from_request(forms: &[i32]) -> Self {
        if forms.is_empty() {
            return Self::ALL;
        }
        let asked = |form: kagi_proto::v1::KeyForm| forms.contains(&(form as i32));
        Self {
            qr_png: asked(kagi_proto::v1::KeyForm::QrPng),
            qr_svg: asked(kagi_proto::v1::KeyForm::QrSvg),
        }
    }
}

/// A key's forms, as asked for (the QR codes are empty when not).
#[derive(Debug)]
pub struct Rendered {
    pub uri: Zeroizing<String>,
    pub qr_png: Vec<u8>,
    pub qr_svg: String,
}

/// Renders keys, remembering each key's QR mask choice.
#[derive(Debug)]
pub struct KeyRenderer {
    masks: MaskMemo,
}

impl KeyRenderer {
    /// # Errors
    /// When the OS cannot provide the memo's random key.
    pub fn new() -> Result<Self, kagi_runtime::random::RandomError> {
        Ok(Self {
            masks: MaskMemo::new()?,
        })
    }

    /// The otpauth URI and the asked-for QR codes of `key`, under the issuer it was issued
    /// with, or `older_keys_issuer` for a key issued before that was recorded.
    ///
    /// # Errors
    /// Only if the URI cannot be encoded as a QR code, which kagi's bounded inputs rule out.
    pub fn render(
        &self,
        older_keys_issuer: &str,
        key: &RevealedKey,
        forms: Forms,
    ) -> Result<Rendered, String> {
        let mut rendered = Rendered {
            uri: crate::service::otpauth_uri(older_keys_issuer, key),
            qr_png: Vec::new(),
            qr_svg: String::new(),
        };
        if !(forms.qr_png || forms.qr_svg) {
            return Ok(rendered);
        }
        let modules = self.qr_modules(rendered.uri.as_bytes())?;
        if forms.qr_png {
            rendered.qr_png = png(&modules)?;
        }
        if forms.qr_svg {
            rendered.qr_svg = modules
                .renderer()
                .dark_color(svg::Color("#000000"))
                .light_color(svg::Color("#ffffff"))
                .build();
        }
        Ok(rendered)
    }

    /// The QR code of `data` at error-correction level L (the code is shown on a screen,
    /// not printed and scuffed; the lower density also scans better on small screens),
    /// with the remembered mask when there is one.
    fn qr_modules(&self, data: &[u8]) -> Result<Modules, String> {
        let bits = qrcode::bits::encode_auto(data, EcLevel::L).map_err(|e| e.to_string())?;
        let version = bits.version();
        let (codewords, ec) =
            qrcode::ec::construct_codewords(&bits.into_bytes(), version, EcLevel::L)
                .map_err(|e| e.to_string())?;
        let mut canvas = Canvas::new(version, EcLevel::L);
        canvas.draw_all_functional_patterns();
        canvas.draw_data(&codewords, &ec);
        let tag = self.masks.tag(data);
        let colors = match self.masks.get(&tag) {
            Some(pattern) => {
                canvas.apply_mask(pattern);
                canvas.into_colors()
            }
            None => {
                let (pattern, colors) = best_mask(&canvas);
                self.masks.put(tag, pattern);
                colors
            }
        };
        let width = usize::try_from(version.width()).map_err(|e| e.to_string())?;
        Ok(Modules { colors, width })
    }
}

/// A QR code's modules, row by row.
struct Modules {
    colors: Vec<Color>,
    width: usize,
}

impl Modules {
    /// At least 256 px across with the standard 4-module quiet zone, as before.
    fn renderer<P: qrcode::render::Pixel>(&self) -> Renderer<'_, P> {
        let mut renderer = Renderer::new(&self.colors, self.width, 4);
        renderer.min_dimensions(256, 256);
        renderer
    }
}

/// The PNG of `modules`: 8-bit grey (what every viewer reads), compressed with the fast
/// deflate setting. The image is a few large flat areas, which the fast setting packs
/// almost as small as the default does, in a fraction of the time.
fn png(modules: &Modules) -> Result<Vec<u8>, String> {
    use image::ImageEncoder as _;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let image = modules.renderer::<image::Luma<u8>>().build();
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Sub)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(|e| e.to_string())?;
    Ok(png)
}

/// The eight mask patterns of a (non-micro) QR code, in the standard's order.
const PATTERNS: [MaskPattern; 8] = [
    MaskPattern::Checkerboard,
    MaskPattern::HorizontalLines,
    MaskPattern::VerticalLines,
    MaskPattern::DiagonalLines,
    MaskPattern::LargeCheckerboard,
    MaskPattern::Fields,
    MaskPattern::Diamonds,
    MaskPattern::Meadow,
];

/// The encoder's own choice of mask (lowest penalty score), and which pattern it was: the
/// one whose masked canvas is the chosen one.
fn best_mask(unmasked: &Canvas) -> (MaskPattern, Vec<Color>) {
    let best = unmasked.apply_best_mask().into_colors();
    let pattern = PATTERNS
        .into_iter()
        .find(|&pattern| {
            let mut candidate = unmasked.clone();
            candidate.apply_mask(pattern);
            candidate.into_colors() == best
        })
        .unwrap_or(MaskPattern::Checkerboard);
    (pattern, best)
}

/// Each key's QR mask choice, so that only a key's first view in this process pays for
/// choosing it.
///
/// What it holds is not the key: an entry is 3 bits (which of the eight patterns) under a
/// 128-bit HMAC-SHA256 tag of the otpauth URI, keyed by 32 random bytes drawn at start that
/// never leave the process. The tag cannot be tested against guessed secrets without that
/// key, and a rotated key simply stops being looked up. Nothing of the secret, the URI or
/// the image outlives the request. A wrong or stale entry could only make a code harder to
/// scan, never wrong: every mask gives a valid code.
struct MaskMemo {
    key: Zeroizing<[u8; 32]>,
    entries: Mutex<HashMap<[u8; 16], u8>>,
}

impl std::fmt::Debug for MaskMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskMemo").finish_non_exhaustive()
    }
}

impl MaskMemo {
    /// Entries kept before the memo starts over (16 bytes of tag and one of choice each:
    /// about 2 MiB at most with the map's overhead).
    const CAPACITY: usize = 65_536;

    fn new() -> Result<Self, kagi_runtime::random::RandomError> {
        let mut key = Zeroizing::new([0_u8; 32]);
        kagi_runtime::random::fill(key.as_mut_slice())?;
        Ok(Self {
            key,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn tag(&self, uri: &[u8]) -> [u8; 16] {
        let mut tag = [0_u8; 16];
        // HMAC takes a key of any length.
        if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.key.as_slice()) {
            mac.update(uri);
            tag.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        }
        tag
    }

    fn get(&self, tag: &[u8; 16]) -> Option<MaskPattern> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(tag)
            .and_then(|&n| PATTERNS.get(usize::from(n)).copied())
    }

    fn put(&self, tag: [u8; 16], pattern: MaskPattern) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
            entries.insert(tag, pattern as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder_choice(uri: &str) -> Vec<Color> {
        qrcode::QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::L)
            .unwrap()
            .into_colors()
    }

    #[test]
    fn a_remembered_mask_draws_the_code_the_encoder_would_choose() {
        let renderer = KeyRenderer::new().unwrap();
        for n in 0..40 {
            let uri = format!(
                "otpauth://totp/Example%20University:user{n}?secret=JBSWY3DPEHPK3PXP{n:04}&issuer=Example%20University&algorithm=SHA1&digits=6&period=30"
            );
            let first = renderer.qr_modules(uri.as_bytes()).unwrap();
            let again = renderer.qr_modules(uri.as_bytes()).unwrap();
            let expected = encoder_choice(&uri);
            assert!(first.colors == expected, "first view, uri {n}");
            assert!(again.colors == expected, "remembered view, uri {n}");
        }
        assert_eq!(renderer.masks.entries.lock().unwrap().len(), 40);
    }

    #[test]
    fn the_memo_holds_neither_the_uri_nor_the_secret() {
        let renderer = KeyRenderer::new().unwrap();
        let uri = "otpauth://totp/x:taro?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=x";
        renderer.qr_modules(uri.as_bytes()).unwrap();
        let entries = renderer.masks.entries.lock().unwrap();
        let (tag, choice) = entries.iter().next().unwrap();
        assert!(*choice < 8, "three bits of choice");
        assert!(!uri.as_bytes().windows(16).any(|w| w == tag));
        let other = MaskMemo::new().unwrap();
        assert_ne!(
            other.tag(uri.as_bytes()),
            *tag,
            "tags are keyed per process"
        );
    }
}

//! How a revealed key is shown: its otpauth URI and, only when the caller asks for them,
//! the URI as a QR code in PNG and SVG.
//!
//! Encoding a QR code is most of the cost of showing a key, and most of that is choosing
//! the mask: the encoder draws the code under each of the eight patterns the standard
//! defines and scores each for scanning hazards. The choice depends only on the key, so it
//! is made once, when a key is first drawn, and kept in the account row (`qr_mask`: three
//! bits of choice, not the key); every later view, in any replica and after any restart,
//! draws the code with it directly. Nothing of the secret, the URI or the image outlives
//! the request. A stale choice (say, `totp.issuer` changed for keys older than their own
//! issuer) could only make a code slightly harder to scan, never wrong: every mask gives a
//! valid code.

use qrcode::canvas::{Canvas, MaskPattern};
use qrcode::render::{Renderer, svg};
use qrcode::{Color, EcLevel};
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
    /// The mask pattern chosen for a key drawn for the first time, to be remembered
    /// ([`crate::service::Keystore::remember_qr_mask`]).
    pub new_qr_mask: Option<u8>,
}

/// The otpauth URI and the asked-for QR codes of `key`, under the issuer it was issued
/// with, or `older_keys_issuer` for a key issued before that was recorded; drawn with the
/// key's remembered mask when it has one.
///
/// # Errors
/// Only if the URI cannot be encoded as a QR code, which kagi's bounded inputs rule out.
pub fn render(
    older_keys_issuer: &str,
    key: &RevealedKey,
    forms: Forms,
) -> Result<Rendered, String> {
    let mut rendered = Rendered {
        uri: crate::service::otpauth_uri(older_keys_issuer, key),
        qr_png: Vec::new(),
        qr_svg: String::new(),
        new_qr_mask: None,
    };
    if !(forms.qr_png || forms.qr_svg) {
        return Ok(rendered);
    }
    let known = key
        .qr_mask
        .and_then(|n| PATTERNS.get(usize::from(n)).copied());
    let (modules, chosen) = qr_modules(rendered.uri.as_bytes(), known)?;
    rendered.new_qr_mask = chosen.map(|pattern| pattern as u8);
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

/// The QR code of `data` at error-correction level L (the code is shown on a screen, not
/// printed and scuffed; the lower density also scans better on small screens), masked with
/// `known`, or else with the encoder's own choice, returned as the pattern to remember.
fn qr_modules(
    data: &[u8],
    known: Option<MaskPattern>,
) -> Result<(Modules, Option<MaskPattern>), String> {
    let bits = qrcode::bits::encode_auto(data, EcLevel::L).map_err(|e| e.to_string())?;
    let version = bits.version();
    let (codewords, ec) = qrcode::ec::construct_codewords(&bits.into_bytes(), version, EcLevel::L)
        .map_err(|e| e.to_string())?;
    let mut canvas = Canvas::new(version, EcLevel::L);
    canvas.draw_all_functional_patterns();
    canvas.draw_data(&codewords, &ec);
    let (colors, chosen) = match known {
        Some(pattern) => {
            canvas.apply_mask(pattern);
            (canvas.into_colors(), None)
        }
        None => {
            let (pattern, colors) = best_mask(&canvas);
            (colors, Some(pattern))
        }
    };
    let width = usize::try_from(version.width()).map_err(|e| e.to_string())?;
    Ok((Modules { colors, width }, chosen))
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

/// The PNG of `modules`, as large as before (at least 256 px across, whole pixels per
/// module, the 4-module quiet zone) but 1 bit per pixel: each module row is drawn once and
/// repeated, the rows are filtered "Up" (a repeated row becomes zeros) and compressed with
/// the fast deflate setting. Encoding the 8-bit image, pixel by pixel, was most of the cost
/// of a view once the mask is known.
fn png(modules: &Modules) -> Result<Vec<u8>, String> {
    const QUIET: usize = 4;
    let across = modules.width + 2 * QUIET;
    let scale = 256_usize.div_ceil(across);
    let side = across * scale;
    let row_bytes = side.div_ceil(8);
    let mut raw = Vec::with_capacity(row_bytes * side);
    let mut row = vec![0_u8; row_bytes];
    for y in 0..across {
        // 1 is white in a grey PNG; the bits past the last pixel are padding.
        row.fill(0xFF);
        for x in 0..across {
            let dark = (QUIET..QUIET + modules.width).contains(&x)
                && (QUIET..QUIET + modules.width).contains(&y)
                && modules.colors[(y - QUIET) * modules.width + (x - QUIET)] == Color::Dark;
            if dark {
                for px in x * scale..(x + 1) * scale {
                    row[px / 8] &= !(0x80 >> (px % 8));
                }
            }
        }
        for _ in 0..scale {
            raw.extend_from_slice(&row);
        }
    }
    let side = u32::try_from(side).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Up);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&raw).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
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
        for n in 0..40 {
            let uri = format!(
                "otpauth://totp/Example%20University:user{n}?secret=JBSWY3DPEHPK3PXP{n:04}&issuer=Example%20University&algorithm=SHA1&digits=6&period=30"
            );
            let (first, chosen) = qr_modules(uri.as_bytes(), None).unwrap();
            let (again, none) = qr_modules(uri.as_bytes(), chosen).unwrap();
            let expected = encoder_choice(&uri);
            assert!(first.colors == expected, "first view, uri {n}");
            assert!(again.colors == expected, "remembered view, uri {n}");
            assert!(chosen.is_some() && none.is_none());
        }
    }

    #[test]
    fn the_png_shows_the_same_image_as_the_qr_renderer_in_one_bit() {
        let uri = "otpauth://totp/Example%20University:taro?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Example%20University&algorithm=SHA1&digits=6&period=30";
        let (modules, _) = qr_modules(uri.as_bytes(), None).unwrap();
        let expected = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::L)
            .unwrap()
            .render::<image::Luma<u8>>()
            .min_dimensions(256, 256)
            .build();

        let shown = image::load_from_memory(&png(&modules).unwrap())
            .unwrap()
            .to_luma8();

        assert_eq!(shown.dimensions(), expected.dimensions());
        assert!(shown.pixels().zip(expected.pixels()).all(|(a, b)| a == b));
    }
}

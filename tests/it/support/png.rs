//! Just enough of PNG to look at a browser's screenshot: 8-bit RGB or RGBA, not interlaced (what
//! Chromium writes). Chunks are walked by hand, the image data inflated with `miniz_oxide`, and
//! each scanline's filter undone, so a test can count colours instead of trusting a file size.

#![allow(dead_code)]
/// A decoded image: RGB pixels, row by row.
#[derive(Debug)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<[u8; 3]>,
}

/// How varied an image is.
#[derive(Debug)]
pub struct Variety {
    /// Distinct colours.
    pub colours: usize,
    /// Share of pixels that differ from the most common colour (the background).
    pub non_background: f64,
}

impl Image {
    pub fn variety(&self) -> Variety {
        let mut counts = std::collections::HashMap::new();
        for p in &self.rgb {
            *counts.entry(*p).or_insert(0usize) += 1;
        }
        let background = counts.values().copied().max().unwrap_or(0);
        Variety {
            colours: counts.len(),
            non_background: 1.0 - background as f64 / self.rgb.len().max(1) as f64,
        }
    }

    /// True when some pixel has exactly this colour.
    pub fn has_colour(&self, rgb: [u8; 3]) -> bool {
        self.rgb.contains(&rgb)
    }
}

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

pub fn decode(bytes: &[u8]) -> Result<Image, String> {
    let mut rest = bytes.strip_prefix(&SIGNATURE).ok_or("not a PNG")?;
    let mut header = None;
    let mut data = Vec::new();
    while rest.len() >= 12 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let kind = &rest[4..8];
        let body = rest.get(8..8 + len).ok_or("chunk past the end")?;
        match kind {
            b"IHDR" => header = Some(body.to_vec()),
            b"IDAT" => data.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        rest = &rest[12 + len..];
    }
    let h = header.ok_or("no IHDR")?;
    let width = u32::from_be_bytes(h[0..4].try_into().unwrap()) as usize;
    let height = u32::from_be_bytes(h[4..8].try_into().unwrap()) as usize;
    let (depth, colour, interlace) = (h[8], h[9], h[12]);
    let channels = match (depth, colour, interlace) {
        (8, 2, 0) => 3,
        (8, 6, 0) => 4,
        _ => {
            return Err(format!(
                "unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}"
            ))
        }
    };
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&data)
        .map_err(|e| format!("image data does not inflate: {e:?}"))?;
    let stride = width * channels;
    if raw.len() != height * (stride + 1) {
        return Err(format!(
            "{} bytes of image data for {width}x{height}",
            raw.len()
        ));
    }
    let mut pixels = vec![0u8; height * stride];
    for y in 0..height {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        unfilter(line[0], &line[1..], &mut pixels, y, stride, channels)?;
    }
    let rgb = pixels
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(Image { width, height, rgb })
}

/// Undoes one scanline's filter (PNG spec, section 9) into `out`'s row `y`.
fn unfilter(
    filter: u8,
    line: &[u8],
    out: &mut [u8],
    y: usize,
    stride: usize,
    bpp: usize,
) -> Result<(), String> {
    for x in 0..stride {
        let a = if x >= bpp {
            out[y * stride + x - bpp]
        } else {
            0
        };
        let b = if y > 0 { out[(y - 1) * stride + x] } else { 0 };
        let c = if y > 0 && x >= bpp {
            out[(y - 1) * stride + x - bpp]
        } else {
            0
        };
        let predictor = match filter {
            0 => 0,
            1 => a,
            2 => b,
            3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
            4 => paeth(a, b, c),
            f => return Err(format!("unknown filter {f}")),
        };
        out[y * stride + x] = line[x].wrapping_add(predictor);
    }
    Ok(())
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

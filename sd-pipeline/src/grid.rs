//! Sweep grids (after StableFused's guidance sweeps and sd-fused's emphasis strips): one prompt
//! over the values of one or two parameters, every cell an ordinary text-to-image run, laid out
//! on one labelled contact sheet.
//!
//! ```no_run
//! use sd_pipeline::grid::{grid, Axis};
//! use sd_pipeline::{GenerateRequest, GuidanceRule, StableDiffusion};
//!
//! # fn main() -> sd_pipeline::Result<()> {
//! let sd = StableDiffusion::builder("model-folder").build()?;
//! // sd-fused's strip: the word `zombie` at emphasis 0 ... -1, for two seeds.
//! let base = GenerateRequest {
//!     steps: 20,
//!     guidance: GuidanceRule::TrueCfg,
//!     ..GenerateRequest::new("a (zombie:{w}) in a forest")
//! };
//! let columns: Axis = "emphasis=0,0.1,0.5,1,2,10,-1".parse()?;
//! let rows: Axis = "seed=1,2".parse()?;
//! let sheet = grid(&sd, &base, &columns, Some(&rows), 4, &mut |_, _| {})?;
//! sheet.sheet.save("zombie.png").ok();
//! # Ok(())
//! # }
//! ```

use std::str::FromStr;

use image::{Rgb, RgbImage};
use sd_scheduler::SchedulerKind;

use crate::batch::{generate_batched, BatchedImage};
use crate::error::{Error, Result};
use crate::infotext::{a1111_sampler_name, Infotext};
use crate::request::{display_number, GenerateRequest};
use crate::stable_diffusion::StableDiffusion;

/// The most cells a grid makes (each is a whole text-to-image run).
pub const MAX_CELLS: usize = 1024;

/// The placeholder an [`Axis::Emphasis`] replaces in the prompts: `a (zombie:{w}) in a forest`.
pub const EMPHASIS_PLACEHOLDER: &str = "{w}";

/// One swept parameter and its values, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Axis {
    /// Guidance scales (with [`GuidanceRule::TrueCfg`](crate::GuidanceRule::TrueCfg), 0 is
    /// the unconditional image and negative scales push away from the prompt).
    GuidanceScale(Vec<f64>),
    /// Weights written for [`EMPHASIS_PLACEHOLDER`] in the prompt and negative prompt.
    Emphasis(Vec<f64>),
    /// Seeds.
    Seed(Vec<u64>),
    /// Inference steps.
    Steps(Vec<usize>),
    /// Samplers.
    Scheduler(Vec<SchedulerKind>),
}

impl Axis {
    /// How many values the axis has.
    pub fn len(&self) -> usize {
        match self {
            Axis::GuidanceScale(v) | Axis::Emphasis(v) => v.len(),
            Axis::Seed(v) => v.len(),
            Axis::Steps(v) => v.len(),
            Axis::Scheduler(v) => v.len(),
        }
    }

    /// Whether the axis has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parameter's name, as [`FromStr`] takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Axis::GuidanceScale(_) => "cfg",
            Axis::Emphasis(_) => "emphasis",
            Axis::Seed(_) => "seed",
            Axis::Steps(_) => "steps",
            Axis::Scheduler(_) => "scheduler",
        }
    }

    /// The label of value `i` on the contact sheet: `CFG 7.5`, `w 0.1`, `seed 42`, `20 steps`,
    /// `Euler a`.
    pub fn label(&self, i: usize) -> String {
        match self {
            Axis::GuidanceScale(v) => format!("CFG {}", display_number(v[i])),
            Axis::Emphasis(v) => format!("w {}", display_number(v[i])),
            Axis::Seed(v) => format!("seed {}", v[i]),
            Axis::Steps(v) => format!("{} steps", v[i]),
            Axis::Scheduler(v) => a1111_sampler_name(v[i]).to_string(),
        }
    }

    /// Sets value `i` in `request`.
    pub fn apply(&self, i: usize, request: &mut GenerateRequest) -> Result<()> {
        match self {
            Axis::GuidanceScale(v) => request.guidance_scale = v[i],
            Axis::Emphasis(v) => {
                if !request.prompt.contains(EMPHASIS_PLACEHOLDER)
                    && !request.negative_prompt.contains(EMPHASIS_PLACEHOLDER)
                {
                    return Err(Error::request(
                        "prompt",
                        format!(
                            "an emphasis sweep writes its values for {EMPHASIS_PLACEHOLDER} in \
                             the prompt, e.g. \"a (zombie:{EMPHASIS_PLACEHOLDER}) in a forest\"; \
                             the prompt has none"
                        ),
                    ));
                }
                let w = display_number(v[i]);
                request.prompt = request.prompt.replace(EMPHASIS_PLACEHOLDER, &w);
                request.negative_prompt = request.negative_prompt.replace(EMPHASIS_PLACEHOLDER, &w);
            }
            Axis::Seed(v) => request.seed = v[i],
            Axis::Steps(v) => request.steps = v[i],
            Axis::Scheduler(v) => request.scheduler = Some(v[i]),
        }
        Ok(())
    }
}

impl FromStr for Axis {
    type Err = Error;

    /// `NAME=V1,V2,...` with NAME one of `cfg` (also `guidance`, `guidance-scale`), `emphasis`
    /// (`w`), `seed`, `steps`, `scheduler` (`sampler`); values as the CLI takes them.
    fn from_str(spec: &str) -> Result<Self> {
        let bad = |message: String| Error::request("axis", format!("{spec:?}: {message}"));
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=V1,V2,... e.g. cfg=3,7.5,12".into()))?;
        let values: Vec<&str> = values.split(',').map(str::trim).collect();
        if values.iter().any(|v| v.is_empty()) {
            return Err(bad("an empty value".into()));
        }
        fn numbers<T: FromStr>(
            values: &[&str],
            what: &str,
            bad: &dyn Fn(String) -> Error,
        ) -> Result<Vec<T>> {
            values
                .iter()
                .map(|v| v.parse().map_err(|_| bad(format!("{v:?} is not {what}"))))
                .collect()
        }
        let finite = |v: Vec<f64>| match v.iter().find(|x| !x.is_finite() || x.abs() > 1e6) {
            Some(x) => Err(bad(format!("{x} is out of range"))),
            None => Ok(v),
        };
        let axis = match name.trim() {
            "cfg" | "guidance" | "guidance-scale" => {
                Axis::GuidanceScale(finite(numbers(&values, "a number", &bad)?)?)
            }
            "emphasis" | "w" => Axis::Emphasis(finite(numbers(&values, "a number", &bad)?)?),
            "seed" => Axis::Seed(numbers(&values, "a seed (0 to 2^64 - 1)", &bad)?),
            "steps" => Axis::Steps(numbers(&values, "a step count", &bad)?),
            "scheduler" | "sampler" => Axis::Scheduler(
                values
                    .iter()
                    .map(|v| v.parse().map_err(|e| bad(format!("{e}"))))
                    .collect::<Result<_>>()?,
            ),
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; one of cfg, emphasis, seed, steps, scheduler"
                )))
            }
        };
        Ok(axis)
    }
}

/// One run of a grid: where it goes and what it asks.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Column (the first axis's value index).
    pub column: usize,
    /// Row (the second axis's value index; 0 without one).
    pub row: usize,
    /// `base` with both values applied.
    pub request: GenerateRequest,
}

/// The cells of `columns` × `rows`, row by row: `base` with each pair of values applied.
///
/// # Errors
/// An empty axis, both axes sweeping the same parameter, more than [`MAX_CELLS`] cells, or an
/// emphasis sweep over a prompt without [`EMPHASIS_PLACEHOLDER`].
pub fn cells(base: &GenerateRequest, columns: &Axis, rows: Option<&Axis>) -> Result<Vec<Cell>> {
    if columns.is_empty() || rows.is_some_and(Axis::is_empty) {
        return Err(Error::request("axis", "an axis needs at least one value"));
    }
    if let Some(rows) = rows {
        if rows.name() == columns.name() {
            return Err(Error::request(
                "axis",
                format!(
                    "both axes sweep {}; give two different parameters",
                    rows.name()
                ),
            ));
        }
    }
    let row_count = rows.map_or(1, Axis::len);
    let total = columns.len().saturating_mul(row_count);
    if total > MAX_CELLS {
        return Err(Error::request(
            "axis",
            format!("{total} cells; a grid makes at most {MAX_CELLS}"),
        ));
    }
    let mut out = Vec::with_capacity(total);
    for row in 0..row_count {
        for column in 0..columns.len() {
            let mut request = base.clone();
            columns.apply(column, &mut request)?;
            if let Some(rows) = rows {
                rows.apply(row, &mut request)?;
            }
            request.validate()?;
            out.push(Cell {
                column,
                row,
                request,
            });
        }
    }
    Ok(out)
}

/// What [`grid`] makes.
#[derive(Debug, Clone)]
pub struct Grid {
    /// The labelled contact sheet.
    pub sheet: RgbImage,
    /// Every cell's image, row by row.
    pub images: Vec<RgbImage>,
    /// Every cell's A1111 parameters, row by row.
    pub infotexts: Vec<Infotext>,
    /// Every cell's request, row by row.
    pub cells: Vec<Cell>,
}

/// Runs every cell of `columns` × `rows` over `base` (one image each: `batch_size` is taken
/// as 1) and lays them out with their labels. Cells that differ only in seed or prompt (the
/// same guidance scale, steps and sampler) go through the UNet up to `max_batch` at a time
/// (see [`generate_batched`] for when that applies). `cell_done(done, total)` follows
/// progress.
pub fn grid(
    sd: &StableDiffusion,
    base: &GenerateRequest,
    columns: &Axis,
    rows: Option<&Axis>,
    max_batch: usize,
    cell_done: &mut dyn FnMut(usize, usize),
) -> Result<Grid> {
    let base = GenerateRequest {
        batch_size: 1,
        ..base.clone()
    };
    let cells = cells(&base, columns, rows)?;
    // Cells that can share a batch, next to each other: by guidance scale, steps and sampler
    // (a stable sort, so seeds and prompts keep their order).
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&cells[a].request, &cells[b].request);
        let sampler = |r: &GenerateRequest| r.scheduler.map(|k| k.name());
        x.guidance_scale
            .total_cmp(&y.guidance_scale)
            .then(x.steps.cmp(&y.steps))
            .then(sampler(x).cmp(&sampler(y)))
    });
    let sorted: Vec<GenerateRequest> = order.iter().map(|&i| cells[i].request.clone()).collect();
    let made = generate_batched(sd, &sorted, max_batch, cell_done)?;
    let mut slots: Vec<Option<BatchedImage>> = vec![None; cells.len()];
    for (made, &i) in made.into_iter().zip(&order) {
        slots[i] = Some(made);
    }
    let (images, infotexts): (Vec<RgbImage>, Vec<Infotext>) = slots
        .into_iter()
        .map(|s| s.map(|m| (m.image, m.infotext)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::request("grid", "a cell was not made"))?
        .into_iter()
        .unzip();
    let column_labels: Vec<String> = (0..columns.len()).map(|i| columns.label(i)).collect();
    let row_labels: Vec<String> = rows
        .map(|r| (0..r.len()).map(|i| r.label(i)).collect())
        .unwrap_or_default();
    let sheet = contact_sheet(&images, &column_labels, &row_labels)?;
    Ok(Grid {
        sheet,
        images,
        infotexts,
        cells,
    })
}

/// Background and ink of the sheet's margins.
const PAPER: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([0, 0, 0]);

/// `images` (one size, row by row, `column_labels.len()` per row) on a white sheet with each
/// column's label above it and, when given, each row's label to its left, in an 8x8 bitmap
/// font scaled to the cell size (1x below 256 pixels, 2x below 512, ...). Labels longer than a
/// cell are cut.
pub fn contact_sheet(
    images: &[RgbImage],
    column_labels: &[String],
    row_labels: &[String],
) -> Result<RgbImage> {
    let columns = column_labels.len();
    let rows = row_labels.len().max(1);
    let Some(first) = images.first() else {
        return Err(Error::request("grid", "no images to lay out"));
    };
    if columns == 0 || images.len() != columns * rows {
        return Err(Error::request(
            "grid",
            format!(
                "{} images do not fill {columns} columns x {rows} rows",
                images.len()
            ),
        ));
    }
    let (w, h) = first.dimensions();
    if images.iter().any(|i| i.dimensions() != (w, h)) {
        return Err(Error::request("grid", "the images differ in size"));
    }
    let scale = 1 + w.min(h) / 256;
    let glyph = 8 * scale;
    let pad = 2 * scale;
    let top = glyph + 2 * pad;
    let longest_row_label = row_labels.iter().map(|l| l.chars().count()).max();
    let left = longest_row_label.map_or(0, |n| n as u32 * glyph + 2 * pad);
    let mut sheet = RgbImage::from_pixel(left + columns as u32 * w, top + rows as u32 * h, PAPER);
    for (c, label) in column_labels.iter().enumerate() {
        let x = left + c as u32 * w;
        draw_text(&mut sheet, label, x + pad, pad, scale, x + w);
    }
    for (r, label) in row_labels.iter().enumerate() {
        let y = top + r as u32 * h + (h.saturating_sub(glyph)) / 2;
        draw_text(&mut sheet, label, pad, y, scale, left);
    }
    for (i, image) in images.iter().enumerate() {
        let (r, c) = ((i / columns) as u32, (i % columns) as u32);
        image::imageops::replace(
            &mut sheet,
            image,
            i64::from(left + c * w),
            i64::from(top + r * h),
        );
    }
    Ok(sheet)
}

/// Draws `text` with its top-left corner at (`x`, `y`), each font pixel `scale` x `scale`,
/// stopping before `right`. Characters outside ASCII are drawn as `?`.
fn draw_text(image: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, right: u32) {
    let glyph = 8 * scale;
    for (i, ch) in text.chars().enumerate() {
        let gx = x + i as u32 * glyph;
        if gx + glyph > right {
            break;
        }
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            '?' as usize
        };
        let bitmap = font8x8::legacy::BASIC_LEGACY[code];
        for (row, bits) in bitmap.iter().enumerate() {
            for col in 0..8 {
                // Bit 0 is the leftmost pixel of the row.
                if bits >> col & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = gx + col * scale + dx;
                        let py = y + row as u32 * scale + dy;
                        if px < image.width() && py < image.height() {
                            image.put_pixel(px, py, INK);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_label_and_apply() {
        let cfg: Axis = "cfg=0, 7.5,-2".parse().unwrap();
        assert_eq!(cfg, Axis::GuidanceScale(vec![0.0, 7.5, -2.0]));
        assert_eq!(cfg.label(1), "CFG 7.5");
        let sched: Axis = "sampler=euler-ancestral,ddim".parse().unwrap();
        assert_eq!(sched.label(0), "Euler a");
        let mut request = GenerateRequest::new("a (zombie:{w})");
        let w: Axis = "w=0.1,-1".parse().unwrap();
        w.apply(1, &mut request).unwrap();
        assert_eq!(request.prompt, "a (zombie:-1)");
        let seeds: Axis = "seed=1,18446744073709551615".parse().unwrap();
        seeds.apply(1, &mut request).unwrap();
        assert_eq!(request.seed, u64::MAX);

        for bad in [
            "cfg", "cfg=", "cfg=1,,2", "size=1", "seed=-1", "cfg=nan", "steps=x",
        ] {
            let err = bad.parse::<Axis>().unwrap_err();
            assert!(
                matches!(err, Error::InvalidRequest { field: "axis", .. }),
                "{bad}: {err}"
            );
        }
        let err = w
            .apply(0, &mut GenerateRequest::new("no marker"))
            .unwrap_err();
        assert!(err.to_string().contains("{w}"), "{err}");
    }

    #[test]
    fn cells_go_row_by_row_and_refuse_bad_grids() {
        let base = GenerateRequest {
            steps: 5,
            ..GenerateRequest::new("a cat")
        };
        let columns: Axis = "cfg=1,2,3".parse().unwrap();
        let rows: Axis = "seed=7,8".parse().unwrap();
        let cells = cells(&base, &columns, Some(&rows)).unwrap();
        assert_eq!(cells.len(), 6);
        assert_eq!((cells[4].column, cells[4].row), (1, 1));
        assert_eq!(cells[4].request.guidance_scale, 2.0);
        assert_eq!(cells[4].request.seed, 8);
        assert_eq!(cells[4].request.steps, 5);

        let same: Axis = "cfg=4".parse().unwrap();
        assert!(super::cells(&base, &columns, Some(&same)).is_err());
        let many: Axis = Axis::Seed((0..2000).collect());
        assert!(super::cells(&base, &many, None).is_err());
        let zero_steps: Axis = "steps=0".parse().unwrap();
        assert!(super::cells(&base, &zero_steps, None).is_err());
    }

    #[test]
    fn the_sheet_places_cells_under_their_labels() {
        let red = RgbImage::from_pixel(16, 8, Rgb([200, 0, 0]));
        let blue = RgbImage::from_pixel(16, 8, Rgb([0, 0, 200]));
        let images = [red.clone(), blue.clone(), blue.clone(), red.clone()];
        let sheet = contact_sheet(
            &images,
            &["a".into(), "b".into()],
            &["r1".into(), "r2".into()],
        )
        .unwrap();
        // Margins: 12 pixels of label on top (8 + 2 * 2), 20 on the left (2 chars + 4).
        assert_eq!(sheet.dimensions(), (20 + 32, 12 + 16));
        assert_eq!(sheet.get_pixel(20, 12), &Rgb([200, 0, 0]));
        assert_eq!(sheet.get_pixel(36, 12), &Rgb([0, 0, 200]));
        assert_eq!(sheet.get_pixel(20, 20), &Rgb([0, 0, 200]));
        assert_eq!(sheet.get_pixel(51, 27), &Rgb([200, 0, 0]));
        // Ink in the label strip above the first column, none beyond the last label.
        let ink =
            |x0: u32, x1: u32| (x0..x1).any(|x| (0..12).any(|y| sheet.get_pixel(x, y) == &INK));
        assert!(ink(20, 36) && ink(36, 52));
        assert!(!ink(0, 20));
        assert!(contact_sheet(&images[..3], &["a".into(), "b".into()], &[]).is_err());
    }
}

//! `sd grid` on the tiny model: the sheet's layout, and a cell is pixel-identical to
//! `sd generate` with the same parameters.

mod common;

use common::{folder, s, sd, TempDir};
use sd_pipeline::image_crate;

#[test]
fn a_cell_is_the_image_sd_generate_makes() {
    let dir = TempDir::new("grid");
    let model = folder("tiny-sd1");
    let sheet = dir.path("sheet.png");
    let cells = dir.path("cells");
    let common = [
        "--steps",
        "4",
        "--negative-prompt",
        "blurry",
        "--true-cfg",
        "-q",
    ];
    let mut a = vec!["grid", "a photo of a (cat:{w})", "--model", s(&model)];
    a.extend(["--emphasis-values", "0.5,1,-1", "--y", "seed=1,2"]);
    a.extend(["-o", s(&sheet), "--cells", s(&cells)]);
    a.extend(common);
    let run = sd(&a);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("6 cells"), "{stdout}");
    let image = image_crate::open(&sheet).unwrap().to_rgb8();
    // 64-pixel cells; labels in the 8-pixel font: 12 pixels on top, "seed 1" (6 chars) + 4 left.
    assert_eq!(image.dimensions(), (52 + 3 * 64, 12 + 2 * 64));
    let mut names: Vec<String> = std::fs::read_dir(&cells)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6);
    assert_eq!(names[5], "cell-01-02.png");

    // Row 1 (seed 2), column 2 (w -1), made alone by `sd generate`.
    let alone = dir.path("alone.png");
    let mut g = vec!["generate", "a photo of a (cat:-1)", "--model", s(&model)];
    g.extend(["--seed", "2", "-o", s(&alone)]);
    g.extend(common);
    let run = sd(&g);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let alone = image_crate::open(&alone).unwrap().to_rgb8();
    let cell = image_crate::open(cells.join("cell-01-02.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(cell, alone);
    let placed = image_crate::imageops::crop_imm(&image, 52 + 2 * 64, 12 + 64, 64, 64).to_image();
    assert_eq!(
        placed, alone,
        "the sheet holds the cell where its labels say"
    );
    let other = image_crate::open(cells.join("cell-01-01.png"))
        .unwrap()
        .to_rgb8();
    assert_ne!(other, alone);
    let png = std::fs::read(cells.join("cell-01-02.png")).unwrap();
    let text = String::from_utf8_lossy(&png);
    assert!(
        text.contains("(cat:-1)") && text.contains("Seed: 2"),
        "{text}"
    );
}

#[test]
fn bad_sweeps_fail_before_loading_and_name_the_flag() {
    let dir = TempDir::new("grid-errors");
    let model = folder("tiny-sd1");
    let out = dir.path("sheet.png");
    let cases: [(&[&str], &str); 5] = [
        (&["--x", "cfg=0,7.5"], "--true-cfg"),
        (&["--x", "emphasis=1,2"], "{w}"),
        (&["--x", "colour=1"], "unknown parameter"),
        (&["--x", "seed=1", "--y", "seed=2"], "both axes"),
        (&[], "--x"),
    ];
    for (extra, expect) in cases {
        let mut a = vec!["grid", "a cat", "--model", s(&model), "-o", s(&out), "-q"];
        a.extend_from_slice(extra);
        let run = sd(&a);
        assert!(!run.status.success());
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert!(!out.exists());
    }
}

#[test]
fn batched_cells_match_cells_made_one_at_a_time() {
    let dir = TempDir::new("grid-batch");
    let model = folder("tiny-sd1");
    let mut outputs = Vec::new();
    for batch in ["1", "4"] {
        let cells = dir.path(&format!("cells-{batch}"));
        let sheet = dir.path(&format!("sheet-{batch}.png"));
        let mut a = vec!["grid", "a photo of a (cat:{w})", "--model", s(&model)];
        a.extend([
            "--x",
            "w=0.5,1.5",
            "--y",
            "seed=1,2,3",
            "--scheduler",
            "ddim",
        ]);
        a.extend(["--steps", "4", "--negative-prompt", "blurry", "-q"]);
        a.extend(["--max-batch", batch, "-o", s(&sheet), "--cells", s(&cells)]);
        let run = sd(&a);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        outputs.push(cells);
    }
    for row in 0..3 {
        for col in 0..2 {
            let name = format!("cell-{row:02}-{col:02}.png");
            let one = image_crate::open(outputs[0].join(&name)).unwrap().to_rgb8();
            let batched = image_crate::open(outputs[1].join(&name)).unwrap().to_rgb8();
            let d = one
                .as_raw()
                .iter()
                .zip(batched.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(d <= 1, "{name}: {d} levels between batched and single");
            // Each batched cell's PNG names its own prompt and seed.
            let text = String::from_utf8_lossy(&std::fs::read(outputs[1].join(&name)).unwrap())
                .into_owned();
            let w = ["0.5", "1.5"][col];
            assert!(text.contains(&format!("(cat:{w})")), "{name}");
            assert!(text.contains(&format!("Seed: {}", row + 1)), "{name}");
            assert!(!text.contains("Batch size"), "{name}");
        }
    }
}

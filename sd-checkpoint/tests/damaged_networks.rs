//! LoRA and embedding files are downloaded from anywhere: every truncated or corrupted copy of
//! the fixtures is an error naming the file, never a panic.

use std::path::{Path, PathBuf};

use sd_checkpoint::{LoraFile, TextualInversion};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/lora")
        .join(name)
}

const FILES: [&str; 9] = [
    "kohya.safetensors",
    "kohya-cp.safetensors",
    "peft.safetensors",
    "peft-alpha.safetensors",
    "loha.safetensors",
    "lokr.pt",
    "tinyemb.pt",
    "negemb.safetensors",
    "dfemb.bin",
];

/// Opens `bytes` written to `path` both ways; returns whether either read it.
fn open_both(path: &Path, bytes: &[u8]) -> bool {
    std::fs::write(path, bytes).unwrap();
    let lora = LoraFile::open(path);
    let embedding = TextualInversion::open(path);
    for err in [
        lora.as_ref().err().map(|e| e.to_string()),
        embedding.as_ref().err().map(|e| e.to_string()),
    ]
    .into_iter()
    .flatten()
    {
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    lora.is_ok() || embedding.is_ok()
}

#[test]
fn truncated_copies_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("sd-damaged-networks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in FILES {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let path = dir.join(name);
        assert!(open_both(&path, &bytes), "{name}: the whole file reads");
        let step = (bytes.len() / 150).max(1);
        for cut in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
            assert!(
                !open_both(&path, &bytes[..cut]),
                "{name} cut at {cut} read as whole"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupted_bytes_never_panic() {
    let dir = std::env::temp_dir().join(format!("sd-corrupt-networks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for name in FILES {
        let original = std::fs::read(fixture(name)).unwrap();
        let path = dir.join(name);
        for _ in 0..60 {
            let mut bytes = original.clone();
            // Overwrite a few bytes, mostly near the start where the headers are.
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let span = if state.is_multiple_of(2) {
                    bytes.len().min(512)
                } else {
                    bytes.len()
                };
                let at = (state >> 8) as usize % span;
                bytes[at] = (state >> 40) as u8;
            }
            // Either outcome is fine; a panic is not (and errors name the file).
            let _ = open_both(&path, &bytes);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The web page served at `/`: plain HTML and JavaScript (no build step) embedded in the
//! binary. It sends the form to `/sdapi/v1/txt2img`, polls `/sdapi/v1/progress` for the live
//! preview, and shows the result with its parameters.

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");

//! A1111's LoRA tags: `<lora:NAME>`, `<lora:NAME:MULT>`, `<lora:NAME:TE:UNET>` (and the older
//! LyCORIS extension's `<lyco:…>`; named `te=` / `unet=` arguments too). Each tag is cut out of
//! the prompt before it is tokenized; the rest of the text is kept as written.

use crate::error::{Error, Result};

/// One `<lora:…>` tag.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTag {
    /// The network's name: its file name without the extension.
    pub name: String,
    /// Multiplier of its text-encoder modules (default 1).
    pub text_encoder: f64,
    /// Multiplier of its UNet modules (default: the text-encoder multiplier).
    pub unet: f64,
}

/// `prompt` without its LoRA tags, and the tags in order.
///
/// # Errors
/// [`Error::LoraTag`] for a tag with no name, a multiplier that is not a finite number, or
/// more arguments than A1111 takes.
pub fn split_lora_tags(prompt: &str) -> Result<(String, Vec<LoraTag>)> {
    let mut text = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let kind_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let kind = &after[..kind_len];
        let body = after[kind_len..].strip_prefix(':');
        let end = body.and_then(|b| b.find('>'));
        match (kind, body, end) {
            ("lora" | "lyco", Some(body), Some(end)) => {
                text.push_str(&rest[..start]);
                let tag_text = &rest[start..start + 1 + kind_len + 1 + end + 1];
                tags.push(parse_tag(&body[..end], tag_text)?);
                rest = &body[end + 1..];
            }
            _ => {
                text.push_str(&rest[..start + 1]);
                rest = after;
            }
        }
    }
    text.push_str(rest);
    Ok((text, tags))
}

fn parse_tag(body: &str, tag: &str) -> Result<LoraTag> {
    let fail = |message: String| Error::LoraTag {
        tag: tag.to_string(),
        message,
    };
    let mut parts = body.split(':');
    let name = parts.next().unwrap_or("").trim().to_string();
    if name.is_empty() {
        return Err(fail("has no name".into()));
    }
    let number = |s: &str| -> Result<f64> {
        match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(fail(format!("{s:?} is not a multiplier (a finite number)"))),
        }
    };
    let (mut te, mut unet) = (None, None);
    let mut positional = 0;
    for part in parts {
        if let Some(v) = part.trim().strip_prefix("te=") {
            te = Some(number(v)?);
        } else if let Some(v) = part.trim().strip_prefix("unet=") {
            unet = Some(number(v)?);
        } else {
            match positional {
                0 => te = Some(number(part)?),
                1 => unet = Some(number(part)?),
                _ => {
                    return Err(fail(
                        "has more than two multipliers (dynamic rank is not supported)".into(),
                    ))
                }
            }
            positional += 1;
        }
    }
    let text_encoder = te.unwrap_or(1.0);
    Ok(LoraTag {
        name,
        text_encoder,
        unet: unet.unwrap_or(text_encoder),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, te: f64, unet: f64) -> LoraTag {
        LoraTag {
            name: name.into(),
            text_encoder: te,
            unet,
        }
    }

    #[test]
    fn tags_are_cut_out_with_their_multipliers() {
        let (text, tags) =
            split_lora_tags("a cat <lora:style one:0.7>, red <lyco:detail:0.5:1.2><lora:x>")
                .unwrap();
        assert_eq!(text, "a cat , red ");
        assert_eq!(
            tags,
            vec![
                tag("style one", 0.7, 0.7),
                tag("detail", 0.5, 1.2),
                tag("x", 1.0, 1.0)
            ]
        );
        let (_, tags) = split_lora_tags("<lora:n:unet=0.3:te=0>").unwrap();
        assert_eq!(tags, vec![tag("n", 0.0, 0.3)]);
    }

    #[test]
    fn other_angle_brackets_stay_text() {
        for prompt in [
            "i <3 cats",
            "<hypernet:x:1>",
            "<lora no colon>",
            "<lora:open",
            "a < b > c",
        ] {
            let (text, tags) = split_lora_tags(prompt).unwrap();
            assert_eq!((text.as_str(), tags.len()), (prompt, 0), "{prompt}");
        }
    }

    #[test]
    fn bad_tags_are_errors_naming_the_tag() {
        for (prompt, needle) in [
            ("a <lora::1>", "no name"),
            ("a <lora:x:strong>", "\"strong\""),
            ("a <lora:x:1:1:8>", "more than two"),
            ("a <lora:x:inf>", "finite"),
        ] {
            let err = split_lora_tags(prompt).unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains("<lora:"),
                "{prompt}: {err}"
            );
        }
    }
}

//! A1111's sampler and schedule-type names, mapped to sd-scheduler's samplers: `sampler_name`
//! ("Euler a", "DPM++ 2M", "DDIM", ..., old-style "DPM++ 2M Karras" too) and `scheduler`
//! ("Automatic", "Karras"). Karras sigmas exist for Euler, Heun, LMS, DPM++ 2M and UniPC;
//! asking for them with another sampler is refused, as is any sampler this server lacks.

use sd_pipeline::infotext::a1111_sampler_name;
use sd_pipeline::request::supports_karras;
use sd_pipeline::sd_scheduler::SchedulerKind;
use serde::Serialize;

use crate::api_error::ApiError;

/// A sampler and its schedule, as a request chose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerChoice {
    /// The sampler.
    pub kind: SchedulerKind,
    /// `Some(true)` for Karras sigmas, `Some(false)` for the sampler's own schedule, None for
    /// the model's `use_karras_sigmas` ("Automatic").
    pub karras: Option<bool>,
}

/// A1111's older names (`k_euler_a`, ...), accepted as aliases.
fn aliases(kind: SchedulerKind) -> &'static [&'static str] {
    match kind {
        SchedulerKind::Ddim => &["ddim"],
        SchedulerKind::Ddpm => &["ddpm"],
        SchedulerKind::Pndm => &["plms"],
        SchedulerKind::Lms => &["k_lms"],
        SchedulerKind::Euler => &["k_euler"],
        SchedulerKind::EulerAncestral => &["k_euler_a"],
        SchedulerKind::Heun => &["k_heun"],
        SchedulerKind::DpmSolverPlusPlus => &["k_dpmpp_2m"],
        SchedulerKind::UniPc => &["unipc"],
    }
}

/// The sampler called `name`: A1111's name or alias, or sd-scheduler's (`euler-ancestral`),
/// any case.
fn kind_named(name: &str) -> Option<SchedulerKind> {
    SchedulerKind::ALL.into_iter().find(|&k| {
        a1111_sampler_name(k).eq_ignore_ascii_case(name)
            || k.name().eq_ignore_ascii_case(name)
            || aliases(k).iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// The names offered, for error messages.
fn offered() -> String {
    SchedulerKind::ALL.map(a1111_sampler_name).join(", ")
}

/// Reads `sampler_name` (or the older `sampler_index`; default "Euler", as A1111's API) and
/// `scheduler` (default "Automatic").
///
/// # Errors
/// [`ApiError::InvalidField`] for a sampler or schedule type this server lacks, or Karras
/// asked of a sampler that has no Karras schedule.
pub fn choose(
    sampler_name: Option<&str>,
    sampler_index: Option<&str>,
    scheduler: Option<&str>,
) -> Result<SamplerChoice, ApiError> {
    let (field, name) = match (sampler_name, sampler_index) {
        (Some(name), _) => ("sampler_name", name),
        (None, Some(name)) => ("sampler_index", name),
        (None, None) => ("sampler_name", "Euler"),
    };
    let name = name.trim();
    let (base, karras_suffix) = match name.len().checked_sub(" Karras".len()) {
        Some(cut) if name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(" karras") => {
            (&name[..cut], true)
        }
        _ => (name, false),
    };
    let kind = kind_named(base)
        .or_else(|| kind_named(name).filter(|_| !karras_suffix))
        .ok_or_else(|| {
            ApiError::field(
                field,
                format!(
                    "{name:?} is not a sampler of this server; it has {}",
                    offered()
                ),
            )
        })?;
    let karras = match scheduler.map(str::trim) {
        None | Some("") => karras_suffix.then_some(true),
        Some(s) if s.eq_ignore_ascii_case("automatic") => karras_suffix.then_some(true),
        Some(s) if s.eq_ignore_ascii_case("karras") => Some(true),
        Some(s) => {
            return Err(ApiError::field(
                "scheduler",
                format!("{s:?} is not a schedule type of this server; it has Automatic, Karras"),
            ))
        }
    };
    if karras == Some(true) && !supports_karras(kind) {
        let (field, what) = if karras_suffix {
            (field, name.to_string())
        } else {
            (
                "scheduler",
                format!("Karras with {}", a1111_sampler_name(kind)),
            )
        };
        return Err(ApiError::field(
            field,
            format!(
                "{what}: {} has no Karras schedule (Euler, Heun, LMS, DPM++ 2M and UniPC have)",
                a1111_sampler_name(kind)
            ),
        ));
    }
    Ok(SamplerChoice { kind, karras })
}

/// The label of a choice's schedule type, as A1111's `/schedulers` names it.
pub fn schedule_label(karras: bool) -> &'static str {
    if karras {
        "Karras"
    } else {
        "Automatic"
    }
}

/// One entry of `GET /sdapi/v1/samplers`.
#[derive(Debug, Clone, Serialize)]
pub struct SamplerItem {
    /// A1111's name.
    pub name: &'static str,
    /// Other names accepted.
    pub aliases: Vec<&'static str>,
    /// `{"scheduler": "karras"}` for samplers that have Karras sigmas, as A1111 lists them.
    pub options: serde_json::Value,
}

/// Every sampler, for `GET /sdapi/v1/samplers`.
pub fn sampler_list() -> Vec<SamplerItem> {
    SchedulerKind::ALL
        .into_iter()
        .map(|k| {
            let mut names = aliases(k).to_vec();
            if !names.contains(&k.name()) {
                names.push(k.name());
            }
            SamplerItem {
                name: a1111_sampler_name(k),
                aliases: names,
                options: if supports_karras(k) {
                    serde_json::json!({ "scheduler": "karras" })
                } else {
                    serde_json::json!({})
                },
            }
        })
        .collect()
}

/// One entry of `GET /sdapi/v1/schedulers`.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleItem {
    /// The name requests give as `scheduler`.
    pub name: &'static str,
    /// The name shown.
    pub label: &'static str,
    /// Other names accepted.
    pub aliases: Option<Vec<&'static str>>,
    /// Karras' rho (7), or -1 for the sampler's own spacing.
    pub default_rho: f64,
    /// Always false here (an A1111 internal).
    pub need_inner_model: bool,
}

/// The schedule types, for `GET /sdapi/v1/schedulers`.
pub fn schedule_list() -> Vec<ScheduleItem> {
    vec![
        ScheduleItem {
            name: "automatic",
            label: "Automatic",
            aliases: None,
            default_rho: -1.0,
            need_inner_model: false,
        },
        ScheduleItem {
            name: "karras",
            label: "Karras",
            aliases: None,
            default_rho: 7.0,
            need_inner_model: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: Option<&str>, scheduler: Option<&str>) -> SamplerChoice {
        choose(name, None, scheduler).unwrap()
    }

    #[test]
    fn a1111_names_map_to_ours() {
        use SchedulerKind::*;
        assert_eq!(ok(None, None).kind, Euler);
        assert_eq!(ok(Some("Euler a"), None).kind, EulerAncestral);
        assert_eq!(ok(Some("k_euler_a"), None).kind, EulerAncestral);
        assert_eq!(ok(Some("euler-ancestral"), None).kind, EulerAncestral);
        assert_eq!(ok(Some("DDIM"), None).kind, Ddim);
        assert_eq!(ok(Some("PLMS"), None).kind, Pndm);
        assert_eq!(
            ok(Some("DPM++ 2M Karras"), None),
            SamplerChoice {
                kind: DpmSolverPlusPlus,
                karras: Some(true)
            }
        );
        assert_eq!(ok(Some("DPM++ 2M"), Some("Karras")).karras, Some(true));
        assert_eq!(ok(Some("DPM++ 2M"), Some("automatic")).karras, None);
        assert_eq!(choose(None, Some("LMS Karras"), None).unwrap().kind, Lms);
    }

    #[test]
    fn refusals_name_the_field() {
        let field = |n: Option<&str>, s: Option<&str>| {
            choose(n, None, s)
                .unwrap_err()
                .field_name()
                .unwrap()
                .to_string()
        };
        assert_eq!(field(Some("DPM++ SDE"), None), "sampler_name");
        assert_eq!(field(Some("Euler a Karras"), None), "sampler_name");
        assert_eq!(field(Some("DDIM"), Some("Karras")), "scheduler");
        assert_eq!(field(Some("Euler"), Some("Exponential")), "scheduler");
        let e = choose(Some("DDIM"), None, Some("karras"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("DDIM has no Karras schedule"), "{e}");
    }
}

//! Which instruction sets this CPU offers, read once per process.
//!
//! On Linux the flags come from `/proc/cpuinfo` (what the kernel enabled, which is what a VM
//! really allows), cross-checked with `is_x86_feature_detected!` (what the compiler's runtime
//! checks see); a feature is used only when both say yes. `SD_KERNELS_ISA=avx2|generic` forces a
//! lower tier, for tests of the fallbacks and for comparisons.
//!
//! Having an instruction is not the same as it paying off: on Intel's AVX512-BF16 parts
//! (Cooper Lake, Sapphire Rapids) `vdpbf16ps` issues at half the rate of f32 FMAs (measured on
//! a Sapphire Rapids VM: 71 against 131 GFLOP/s per core), so there bf16 products run on the
//! f32 kernels with the inputs rounded to bf16, which gives the same numbers; on AMD (Zen 4,
//! Zen 5) the dot product is twice the f32 rate and is used. `SD_KERNELS_ISA=avx512-bf16`
//! uses it wherever it exists.
//!
//! Where AMX is there (Sapphire Rapids and later), bf16 products run on its tiles (measured:
//! ~1.1 TFLOP/s per core on register-resident tiles), once Linux grants the process the tile
//! registers (`arch_prctl`); `SD_KERNELS_ISA=avx512-bf16` (or lower) turns it off.

use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    static OVERRIDE: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// The instruction-set tiers the fast paths are written for, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust (auto-vectorised by the compiler only).
    Generic,
    /// AVX2 + FMA, 256-bit registers.
    Avx2,
    /// AVX-512 F/BW/DQ/VL, 512-bit registers.
    Avx512,
    /// AVX-512 with the BF16 dot-product instructions (`vdpbf16ps`).
    Avx512Bf16,
    /// All of the above and Intel AMX's bf16 tile products (`tdpbf16ps`), with the kernel's
    /// permission to use the tile registers.
    Amx,
}

impl Isa {
    /// The tier kernels use by default: the fastest this CPU runs well (see the module docs),
    /// or what the environment asks for, detected once.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let best = Isa::supported();
            // With AMX, bf16 products whose depth the tiles cannot take run on the f32 kernels.
            let preferred = if best == Isa::Avx512Bf16 && !bf16_dot_pays_off() {
                Isa::Avx512
            } else {
                best
            };
            match std::env::var("SD_KERNELS_ISA").as_deref() {
                Ok("generic") => Isa::Generic,
                Ok("avx2") => best.min(Isa::Avx2),
                Ok("avx512") => best.min(Isa::Avx512),
                Ok("avx512-bf16") => best.min(Isa::Avx512Bf16),
                Ok("amx") => best,
                _ => preferred,
            }
        })
    }

    /// The highest tier this CPU can run at all (what [`with_isa`] may ask for).
    pub fn supported() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(detect_uncached)
    }

    /// The tier kernels started from this thread use now: [`Isa::detect`], or the lower tier
    /// chosen with [`with_isa`].
    pub fn active() -> Isa {
        OVERRIDE.with(|o| o.get()).unwrap_or_else(Isa::detect)
    }

    /// Whether bf16 products run on `vdpbf16ps` (else on AMX tiles, or widened to f32).
    pub fn has_bf16_dot(self) -> bool {
        self == Isa::Avx512Bf16
    }

    /// Whether the AVX-512 BF16 instructions exist (to convert f32 to bf16 while packing).
    pub(crate) fn has_bf16_instructions(self) -> bool {
        self >= Isa::Avx512Bf16
    }

    /// A short name for reports (`avx512-bf16`, `avx512`, `avx2`, `generic`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512-bf16",
            Isa::Amx => "avx512-amx",
        }
    }
}

/// Runs `f` with kernels of tier `isa` (never above [`Isa::supported`]) on this thread, e.g. to
/// test or time the AVX2 and portable fallbacks on an AVX-512 machine, or the bf16 dot kernel
/// where it is not the default. Data packed inside `f` (weights) must be used inside it too.
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    let _tier = TierGuard::enter(isa);
    f()
}

/// Sets this thread's tier while it lives: work handed to other threads (rayon tasks) runs on
/// the tier of the thread that handed it over, as [`with_isa`] promises.
pub(crate) struct TierGuard(Option<Isa>);

impl TierGuard {
    /// This thread runs at `isa` until the guard drops.
    pub(crate) fn enter(isa: Isa) -> Self {
        TierGuard(OVERRIDE.with(|o| o.replace(Some(isa.min(Isa::supported())))))
    }
}

impl Drop for TierGuard {
    fn drop(&mut self) {
        OVERRIDE.with(|o| o.set(self.0));
    }
}

/// The `flags` line of the first processor in `/proc/cpuinfo`, split into words.
fn proc_cpuinfo_flags() -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("flags"))?;
    let (_, flags) = line.split_once(':')?;
    Some(flags.split_whitespace().map(str::to_owned).collect())
}

#[cfg(target_arch = "x86_64")]
fn detect_uncached() -> Isa {
    let flags = proc_cpuinfo_flags();
    // Without /proc/cpuinfo (not Linux) trust the runtime checks alone.
    let has = |name: &str| flags.as_ref().is_none_or(|f| f.iter().any(|x| x == name));
    let avx2 = has("avx2")
        && has("fma")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma");
    let avx512 = avx2
        && ["avx512f", "avx512bw", "avx512dq", "avx512vl"]
            .iter()
            .all(|f| has(f))
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl");
    let bf16 = avx512 && has("avx512_bf16") && is_x86_feature_detected!("avx512bf16");
    let amx = bf16 && has("amx_tile") && has("amx_bf16") && amx_cpuid() && request_amx();
    if amx {
        Isa::Amx
    } else if bf16 {
        Isa::Avx512Bf16
    } else if avx512 {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Generic
    }
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (EDX bit 24).
#[cfg(target_arch = "x86_64")]
fn amx_cpuid() -> bool {
    // SAFETY: leaf 7 exists on every CPU with AVX2 (checked before this is called).
    #[allow(unused_unsafe)]
    let id = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    id.edx & (1 << 22) != 0 && id.edx & (1 << 24) != 0
}

/// Asks Linux for the AMX tile-data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`); without it the first tile instruction kills the process. Granted
/// for the whole process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_amx() -> bool {
    const SYS_ARCH_PRCTL: isize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: a plain system call; it changes nothing but this process's permission.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_amx() -> bool {
    false
}

/// Whether `vdpbf16ps` beats f32 FMAs on this CPU: on AMD's parts it does, on Intel's it does
/// not (see the module docs). Read from CPUID's vendor string.
#[cfg(target_arch = "x86_64")]
fn bf16_dot_pays_off() -> bool {
    // SAFETY: CPUID leaf 0 exists on every x86_64 CPU (the call is safe from Rust 1.94 on).
    #[allow(unused_unsafe)]
    let id = unsafe { std::arch::x86_64::__cpuid(0) };
    let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    vendor != b"GenuineIntel"
}

#[cfg(not(target_arch = "x86_64"))]
fn bf16_dot_pays_off() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_uncached() -> Isa {
    let _ = proc_cpuinfo_flags;
    Isa::Generic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_agrees_with_the_compiler_runtime_checks() {
        let isa = detect_uncached();
        #[cfg(target_arch = "x86_64")]
        {
            if isa >= Isa::Avx2 {
                assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
            }
            if isa >= Isa::Avx512 {
                assert!(is_x86_feature_detected!("avx512f"));
            }
            if isa.has_bf16_dot() {
                assert!(is_x86_feature_detected!("avx512bf16"));
            }
        }
        assert!(!isa.name().is_empty());
    }
}

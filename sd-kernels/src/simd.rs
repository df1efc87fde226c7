//! Run-time dispatch for elementwise loops: one plain-Rust body, compiled three times (AVX-512,
//! AVX2 + FMA, baseline) so the compiler vectorises it for each tier, and called through the
//! tier [`Isa::active`](crate::cpu::Isa::active) picks.

/// Defines `pub(crate) fn $name(args) -> ret` that runs `$body` under the best target features.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                let isa = $crate::cpu::Isa::active();
                if isa >= $crate::cpu::Isa::Avx512 {
                    // SAFETY: the CPU has these features (detected at run time).
                    return unsafe { avx512($($arg),*) };
                }
                if isa >= $crate::cpu::Isa::Avx2 {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion;

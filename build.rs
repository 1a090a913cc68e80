//! Tells the tests whether the machine that builds them can run the AVX2+FMA vector paths, so
//! tests of those paths are ignored with a reason where it cannot, never passed silently.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(host_avx2_fma)");
    println!("cargo::rerun-if-changed=build.rs");
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    #[cfg(target_arch = "x86_64")]
    if native && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        println!("cargo::rustc-cfg=host_avx2_fma");
    }
    let _ = native;
}

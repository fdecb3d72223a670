//! A Rust program that grows a `Vec<u64>` by push to 20,000,000 elements, drops it, then
//! grows a `String` to 16,000,000 bytes. Rust's standard library allocates through the C
//! library's malloc (its default global allocator on Linux), so once a buffer is large
//! enough for glibc to hand it its own mapping, each doubling is an mremap move:
//! 260 KiB → 256 MiB for the Vec, the first buffer's range used again by the String.
//! Real programs held against the kernel (docs/real-programs.md):
//!
//!     rustc -O -o /tmp/vec_growth scripts/vec_growth.rs
//!     sudo .venv/bin/python scripts/record_program.py --name rust_vec --out /tmp/rp \
//!         --latency-runs 7 -- /tmp/vec_growth
fn main() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..20_000_000u64 {
        v.push(i);
    }
    let n = v.len();
    drop(v);
    let mut s = String::new();
    for _ in 0..2_000_000 {
        s.push_str("abcdefgh");
    }
    println!("{} {}", n, s.len());
}

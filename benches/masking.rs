//! Masking throughput: 64 secrets over 1 GiB of output (a 64 MiB buffer pushed 16 times
//! in 64 KiB reads, as the relay does). `MASK_BENCH_MIB` changes the total (default 1024).
//! Run with `cargo bench --bench masking` or `scripts/bench.sh masking`. The one-pass
//! lines also measure `push_split`, the relay's way (no copy of what passes unchanged);
//! `MASK_BENCH_ONLY=NAME` limits them to one input (`text`, `text_secret_every_kib`, `binary`).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use taskcell::secrets::redact::{Masker, Redactor};

/// xorshift64*: deterministic data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick(&mut self, s: &[u8]) -> u8 {
        s[(self.next() % s.len() as u64) as usize]
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn secrets(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    (0..64)
        .map(|i| {
            let len = 20 + (rng.next() % 45) as usize;
            let prefix: &[u8] = match i % 4 {
                0 => b"ghp_",
                1 => b"sk-",
                2 => b"AKIA",
                _ => b"",
            };
            let mut v = prefix.to_vec();
            v.extend((0..len).map(|_| rng.pick(ALNUM)));
            (format!("SECRET_{i}"), v)
        })
        .collect()
}

/// Build-log-like text: words, paths, hex ids, alphanumeric blobs; a secret every
/// `every` bytes.
fn text(rng: &mut Rng, size: usize, secrets: &[(String, Vec<u8>)], every: usize) -> Vec<u8> {
    let words: &[&[u8]] = &[
        b"Compiling",
        b"serde",
        b"v1.0.210",
        b"warning:",
        b"unused",
        b"variable",
        b"error[E0308]:",
        b"-->",
        b"src/main.rs:12:5",
        b"Finished",
        b"release",
        b"target(s)",
        b"in",
        b"GET",
        b"/api/v1/items?page=2",
        b"200",
        b"OK",
        b"INFO",
        b"DEBUG",
        b"the",
        b"of",
        b"and",
    ];
    let mut out = Vec::with_capacity(size + 1024);
    let mut next_secret = 0usize;
    while out.len() < size {
        match rng.next() % 10 {
            0 => out.extend((0..40).map(|_| rng.pick(b"0123456789abcdef"))),
            1 => out.extend((0..60).map(|_| rng.pick(ALNUM))),
            _ => {
                for _ in 0..8 {
                    out.extend_from_slice(words[(rng.next() % words.len() as u64) as usize]);
                    out.push(b' ');
                }
            }
        }
        out.push(b'\n');
        if out.len() > next_secret {
            let (_, v) = &secrets[(rng.next() % 64) as usize];
            out.extend_from_slice(v);
            out.push(b'\n');
            next_secret += every;
        }
    }
    out.truncate(size);
    out
}

/// Mask `data` `rounds` times in 64 KiB pushes, as the relay does; bytes emitted.
fn run(r: &Redactor, data: &[u8], rounds: usize) -> usize {
    passes(r, data, rounds, |m, chunk, out| {
        m.push(chunk, out);
        out.len()
    })
}

/// The same through [`taskcell::secrets::redact::Masker::push_split`], as the output relay
/// masks: what passes unchanged is not copied; bytes that would be written.
fn run_split(r: &Redactor, data: &[u8], rounds: usize) -> usize {
    passes(r, data, rounds, |m, chunk, out| {
        let (masked, passed) = m.push_split(chunk, out);
        masked.len() + passed.len()
    })
}

/// `rounds` passes over `data` in 64 KiB pieces, each masked by `push` (which returns
/// the bytes it emitted), then the flush: bytes emitted in all.
fn passes(
    r: &Redactor,
    data: &[u8],
    rounds: usize,
    mut push: impl FnMut(&mut Masker<'_>, &[u8], &mut Vec<u8>) -> usize,
) -> usize {
    let mut out = Vec::with_capacity(128 << 10);
    let mut m = r.stream();
    let mut n = 0usize;
    for _ in 0..rounds {
        for chunk in data.chunks(64 << 10) {
            out.clear();
            n += push(&mut m, chunk, &mut out);
        }
    }
    out.clear();
    m.flush(&mut out);
    n + out.len()
}

/// CPU time of this thread, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn bench(c: &mut Criterion) {
    let total_mib: usize = std::env::var("MASK_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let buf_mib = total_mib.min(64);
    let rounds = total_mib / buf_mib;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let secrets = secrets(&mut rng);
    let list: Vec<(String, &[u8])> = secrets
        .iter()
        .map(|(n, v)| (n.clone(), v.as_slice()))
        .collect();
    let r = Redactor::new(&list).expect("redactor");
    eprintln!(
        "masking bench: {} secrets, {} patterns, longest {} bytes, {} MiB per iteration",
        r.names().len(),
        r.patterns_for(),
        r.max_pattern_len(),
        buf_mib * rounds
    );
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("text", text(&mut rng, buf_mib << 20, &secrets, 256 << 10)),
        (
            "text_secret_every_kib",
            text(&mut rng, buf_mib << 20, &secrets, 1 << 10),
        ),
        (
            "binary",
            (0..(buf_mib << 20) / 8)
                .flat_map(|_| rng.next().to_le_bytes())
                .collect(),
        ),
    ];
    // Criterion measures wall time, which other processes on a shared machine inflate;
    // this also prints the throughput per CPU second of one pass.
    // MASK_BENCH_ONLY=text (an input's name) runs only its one-pass lines, e.g. under
    // `perf record`.
    let only = std::env::var("MASK_BENCH_ONLY").unwrap_or_default();
    for (name, data) in inputs.iter().filter(|(n, _)| only.is_empty() || *n == only) {
        let t0 = thread_cpu();
        let wall = std::time::Instant::now();
        let n = run(&r, data, rounds);
        let cpu = thread_cpu() - t0;
        let gib = (data.len() * rounds) as f64 / (1u64 << 30) as f64;
        eprintln!(
            "masking/64_secrets_{name}: one pass of {:.2} GiB: {:.2} GiB/s per CPU second, {:.2} GiB/s wall ({n} bytes out)",
            gib,
            gib / cpu,
            gib / wall.elapsed().as_secs_f64()
        );
        let t0 = thread_cpu();
        let n2 = run_split(&r, data, rounds);
        let cpu = thread_cpu() - t0;
        assert_eq!(n, n2, "push_split must emit what push emits");
        eprintln!(
            "masking/64_secrets_{name}: one pass as the relay writes it (push_split): {:.2} GiB/s per CPU second",
            gib / cpu
        );
    }
    let mut g = c.benchmark_group("masking");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes((buf_mib * rounds) as u64 * (1 << 20)));
    for (name, data) in &inputs {
        g.bench_function(format!("64_secrets_{name}"), |b| {
            b.iter(|| run(&r, data, rounds))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Cost of one full metrics sample: against the Orin fixture tree (tegra GPU,
//! rails, nine thermal zones) and against this machine's real `/proc` and
//! `/sys`; plus the pure parsers alone. The sampler runs once a second, so
//! anything under a millisecond is comfortably inside the 3 % CPU budget.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use arasuld::metrics::collect::{
    GpuBackendChoice, Probe, ProbeRoots, parse_meminfo, parse_proc_stat,
};
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn sample_orin_fixture(c: &mut Criterion) {
    let base = fixture("orin");
    let roots = ProbeRoots {
        proc_root: base.join("proc"),
        sys_root: base.join("sys"),
        etc_root: base.join("etc"),
        data_path: base.clone(),
    };
    let mut probe = Probe::new(roots, GpuBackendChoice::Tegra);
    c.bench_function("probe_sample/orin_fixture", |b| {
        b.iter(|| black_box(probe.sample(Utc::now())))
    });
}

fn sample_this_machine(c: &mut Criterion) {
    let mut probe = Probe::new(ProbeRoots::system("/"), GpuBackendChoice::Auto);
    let name = format!("probe_sample/this_machine_{}", probe.gpu_backend());
    c.bench_function(&name, |b| b.iter(|| black_box(probe.sample(Utc::now()))));
}

fn parsers(c: &mut Criterion) {
    let stat = std::fs::read(fixture("orin/proc/stat")).expect("orin stat fixture");
    let meminfo = std::fs::read(fixture("orin/proc/meminfo")).expect("orin meminfo fixture");
    c.bench_function("parse/proc_stat", |b| {
        b.iter(|| black_box(parse_proc_stat(black_box(&stat))))
    });
    c.bench_function("parse/meminfo", |b| {
        b.iter(|| black_box(parse_meminfo(black_box(&meminfo))))
    });
}

criterion_group!(benches, sample_orin_fixture, sample_this_machine, parsers);
criterion_main!(benches);

//! The fuzz targets (src/update/fuzz.rs) on stable, seeded and bounded: a
//! fixed-seed mutation run over the seed bundles, so CI without nightly still
//! drives the reader and the manifest parser through thousands of malformed
//! inputs. `FUZZ_ITERS` (default 3000 per target) sets the count;
//! `FUZZ_SEED_DIR` also writes the seeds there (for cargo fuzz's corpus).

use arasuld::update::fuzz;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

fn iters() -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// One random edit of the kinds that break archives: bit flips, tar-ish
/// bytes, insertions, deletions, truncation, a 512-byte block duplicated.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if v.is_empty() {
            v.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..v.len());
        match rng.random_range(0..7) {
            0 => v[at] ^= 1 << rng.random_range(0..8),
            1 => {
                v[at] = *[
                    0u8, 0xff, b'0', b'7', b'/', b'.', b'"', b'{', b'2', b'5', b'x',
                ]
                .get(rng.random_range(0..11))
                .unwrap_or(&0)
            }
            2 => {
                let n = rng.random_range(1..64);
                let mut ins = vec![0u8; n];
                rng.fill_bytes(&mut ins);
                v.splice(at..at, ins);
            }
            3 => {
                let end = (at + rng.random_range(1..600)).min(v.len());
                v.drain(at..end);
            }
            4 => v.truncate(at),
            5 => {
                let start = at / 512 * 512;
                let end = (start + 512).min(v.len());
                let block = v[start..end].to_vec();
                v.splice(start..start, block);
            }
            _ => {
                // Overwrite with a decimal number (sizes, versions in JSON).
                let s = rng.random_range(0u64..1 << 40).to_string();
                for (i, b) in s.bytes().enumerate() {
                    if let Some(x) = v.get_mut(at + i) {
                        *x = b;
                    }
                }
            }
        }
    }
    v
}

#[test]
fn seed_bundle_reaches_the_payload_checks() {
    // Otherwise the mutation runs below would only exercise the signature gate.
    assert!(fuzz::structured_seed_is_accepted());
    assert_eq!(fuzz::bundle_seeds().len(), 2);
    if let Ok(dir) = std::env::var("FUZZ_SEED_DIR") {
        for (target, seeds) in [
            ("bundle_reader", fuzz::bundle_seeds()),
            ("manifest_parser", fuzz::manifest_seeds()),
        ] {
            let d = std::path::Path::new(&dir).join(target);
            std::fs::create_dir_all(&d).unwrap();
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(d.join(format!("seed-{i}")), s).unwrap();
            }
        }
    }
}

#[test]
fn bundle_reader_survives_seeded_mutations() {
    let seeds = fuzz::bundle_seeds();
    let mut rng = StdRng::seed_from_u64(0x00a7_a501);
    for i in 0..iters() {
        let seed = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        fuzz::bundle_reader(&input);
    }
}

#[test]
fn manifest_parser_survives_seeded_mutations() {
    let seeds = fuzz::manifest_seeds();
    assert!(!seeds.is_empty());
    let mut rng = StdRng::seed_from_u64(0x3a41_f357);
    for i in 0..iters() {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        fuzz::manifest_parser(&input);
    }
}

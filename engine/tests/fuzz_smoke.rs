//! Bounded smoke runs of the engine's fuzz entry points (`engine::fuzzing`, the same code the
//! cargo-fuzz target `tls_records` in `fuzz/` runs): random bytes as post-handshake TLS
//! records, and sealed records with one bit flipped. Seeded xorshift: deterministic.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn input(rng: &mut XorShift, mode: u8) -> Vec<u8> {
    let len = (rng.next() % 600) as usize;
    let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    data.insert(0, rng.next() as u8);
    data.insert(0, mode);
    // Every few raw inputs start with a plausible record header, to get past the first check.
    if mode % 2 == 0 && data.len() > 7 && rng.next() % 3 == 0 {
        data[2] = 23;
        data[3] = 3;
        data[4] = 3;
    }
    data
}

#[test]
fn random_bytes_as_records_never_panic() {
    let mut rng = XorShift(0x5eed_0001);
    for i in 0..20_000u32 {
        let mode = (i % 4) as u8 * 2; // even: raw bytes, both suites
        engine::fuzzing::records(&input(&mut rng, mode));
    }
}

#[test]
fn sealed_records_with_a_flipped_bit_never_leak() {
    let mut rng = XorShift(0x5eed_0002);
    for i in 0..20_000u32 {
        let mode = (i % 4) as u8 * 2 + 1; // odd: sealed, both suites, some untouched
        engine::fuzzing::records(&input(&mut rng, mode));
    }
}

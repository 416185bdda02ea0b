//! Who a synthetic user talks to: uniformly random peers or Zipf-distributed ones (a few
//! very popular users, a long tail), plus the small PRNG the farm draws from.
//!
//! The Zipf sampler is rejection-inversion (Hörmann & Derflinger 1996): O(1) memory and
//! O(1) expected time for any population size, so two million users cost nothing to set up.
//! Rank 1 is the most popular; ranks are mapped onto user indices by a fixed multiplicative
//! permutation so the popular users are spread over every worker and source address.

use serde::{Deserialize, Serialize};

/// xorshift64*: a tiny, fast, deterministic PRNG (not for cryptography).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// How peers are chosen, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerDist {
    /// Every user equally likely.
    Uniform,
    /// Rank `k` chosen with probability ∝ `k^-s` (`s > 0`).
    Zipf {
        /// The exponent; ~1.0 is typical of social graphs.
        s: f64,
    },
}

impl std::str::FromStr for PeerDist {
    type Err = String;
    /// `uniform`, `zipf` (s = 1.0) or `zipf:S`.
    fn from_str(v: &str) -> Result<Self, String> {
        match v {
            "uniform" => Ok(PeerDist::Uniform),
            "zipf" => Ok(PeerDist::Zipf { s: 1.0 }),
            _ => {
                let s = v
                    .strip_prefix("zipf:")
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(|| format!("expected uniform, zipf or zipf:S, got {v:?}"))?;
                if !(s > 0.0 && s <= 10.0) {
                    return Err(format!("zipf exponent must be in (0, 10], got {s}"));
                }
                Ok(PeerDist::Zipf { s })
            }
        }
    }
}

/// Zipf over ranks `1..=n` by rejection-inversion.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    /// `1 - s`.
    q: f64,
    /// Total mass of the hat function over `[0, n]`.
    t: f64,
}

impl Zipf {
    /// A sampler over `1..=n` with exponent `s > 0`.
    pub fn new(n: u64, s: f64) -> Zipf {
        assert!(n >= 1 && s > 0.0, "zipf needs n >= 1 and s > 0");
        let nf = n as f64;
        let q = 1.0 - s;
        let t = if (s - 1.0).abs() < 1e-12 {
            1.0 + nf.ln()
        } else {
            (nf.powf(q) - s) / q
        };
        Zipf { n: nf, s, q, t }
    }

    /// Inverse of the hat's cumulative mass, for `p` in `[0, 1)`.
    fn inv_cdf(&self, p: f64) -> f64 {
        let pt = p * self.t;
        if pt <= 1.0 {
            pt
        } else if (self.s - 1.0).abs() < 1e-12 {
            (pt - 1.0).exp()
        } else {
            (1.0 + (pt - 1.0) * self.q).powf(1.0 / self.q)
        }
    }

    /// One rank in `1..=n`. Expected iterations are small; bounded at 64 tries, after which
    /// rank 1 (the mode) is returned.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        for _ in 0..64 {
            let inv_b = self.inv_cdf(rng.unit());
            let x = (inv_b + 1.0).floor().min(self.n);
            let mut ratio = x.powf(-self.s);
            if x > 1.0 {
                ratio *= inv_b.powf(self.s);
            }
            if rng.unit() < ratio {
                return x as u64;
            }
        }
        1
    }
}

/// Picks a peer (a user index in `0..users`) for a sender.
#[derive(Debug, Clone)]
pub struct PeerPicker {
    users: u64,
    zipf: Option<Zipf>,
    /// Multiplier coprime with `users`: rank → user permutation.
    spread: u64,
}

impl PeerPicker {
    /// A picker over `users` users (≥ 2, so everyone has someone else to talk to).
    pub fn new(users: u64, dist: PeerDist) -> PeerPicker {
        assert!(users >= 2, "a peer needs at least two users");
        let zipf = match dist {
            PeerDist::Uniform => None,
            PeerDist::Zipf { s } => Some(Zipf::new(users, s)),
        };
        let mut spread = 2_654_435_761 % users;
        while gcd(spread, users) != 1 {
            spread += 1;
        }
        PeerPicker {
            users,
            zipf,
            spread,
        }
    }

    /// A user other than `sender`.
    pub fn pick(&self, sender: u64, rng: &mut Rng) -> u64 {
        let u = match &self.zipf {
            None => rng.below(self.users),
            Some(z) => {
                ((z.sample(rng) - 1) as u128 * self.spread as u128 % self.users as u128) as u64
            }
        };
        if u == sender {
            (u + 1) % self.users
        } else {
            u
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_stays_in_bounds_and_favours_rank_one() {
        for &(n, s) in &[
            (1u64, 1.0),
            (2, 1.0),
            (10, 0.5),
            (1000, 1.0),
            (2_000_000, 1.2),
        ] {
            let z = Zipf::new(n, s);
            let mut rng = Rng::new(7);
            let mut ones = 0;
            let mut twos = 0;
            for _ in 0..20_000 {
                let k = z.sample(&mut rng);
                assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
                ones += (k == 1) as u32;
                twos += (k == 2) as u32;
            }
            if n >= 2 {
                assert!(ones > twos, "n={n} s={s}: rank 1 {ones} <= rank 2 {twos}");
            }
        }
    }

    #[test]
    fn zipf_matches_its_distribution_roughly() {
        // n = 4, s = 1: P(1) = 1 / (1 + 1/2 + 1/3 + 1/4) = 0.48.
        let z = Zipf::new(4, 1.0);
        let mut rng = Rng::new(42);
        let draws = 100_000;
        let ones = (0..draws).filter(|_| z.sample(&mut rng) == 1).count();
        let p = ones as f64 / draws as f64;
        assert!((p - 0.48).abs() < 0.02, "P(1) = {p}");
    }

    #[test]
    fn picker_never_returns_the_sender_and_stays_in_range() {
        for dist in [PeerDist::Uniform, PeerDist::Zipf { s: 1.0 }] {
            let p = PeerPicker::new(10, dist);
            let mut rng = Rng::new(3);
            for i in 0..10_000u64 {
                let sender = i % 10;
                let peer = p.pick(sender, &mut rng);
                assert!(peer < 10);
                assert_ne!(peer, sender);
            }
        }
    }

    #[test]
    fn rng_below_and_unit_bounds() {
        let mut rng = Rng::new(0);
        for _ in 0..10_000 {
            assert!(rng.below(3) < 3);
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn dist_parses() {
        assert_eq!("uniform".parse::<PeerDist>(), Ok(PeerDist::Uniform));
        assert_eq!("zipf".parse::<PeerDist>(), Ok(PeerDist::Zipf { s: 1.0 }));
        assert_eq!(
            "zipf:0.8".parse::<PeerDist>(),
            Ok(PeerDist::Zipf { s: 0.8 })
        );
        assert!("zipf:-1".parse::<PeerDist>().is_err());
        assert!("pareto".parse::<PeerDist>().is_err());
    }
}

//! The SAN between hosts and drives: one link per (host, drive).
//!
//! Every message (a command host → drive, a reply drive → host) draws its fate from
//! the run's seeded [`SmallRng`]: delivered after a latency (uniform between
//! `lat_min` and `lat_max`, with rare spikes up to `spike_max`), lost, or late (a
//! reply delayed by `late_min..late_max`, typically beyond the command timeout, so
//! the host has already seen a timeout and drops it). A partition cuts one link
//! until a given time: everything sent on it meanwhile is lost.

use idm_engine::Nanos;
use rand::rngs::SmallRng;
use rand::Rng;

/// Link behaviour of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetConfig {
    /// Shortest one-way latency.
    pub lat_min: Nanos,
    /// Longest ordinary one-way latency.
    pub lat_max: Nanos,
    /// Probability of a latency spike.
    pub spike_p: f64,
    /// Longest spike.
    pub spike_max: Nanos,
    /// Probability a command is lost on the way to the drive.
    pub lose_cmd_p: f64,
    /// Probability a reply is lost on the way back.
    pub lose_reply_p: f64,
    /// Probability a reply is late.
    pub late_p: f64,
    /// Shortest extra delay of a late reply.
    pub late_min: Nanos,
    /// Longest extra delay of a late reply.
    pub late_max: Nanos,
}

impl NetConfig {
    /// A healthy SAN: 20–300 µs, rare 1–5 ms spikes, nothing lost.
    pub fn healthy() -> NetConfig {
        NetConfig {
            lat_min: Nanos::from_micros(20),
            lat_max: Nanos::from_micros(300),
            spike_p: 0.002,
            spike_max: Nanos::from_millis(5),
            lose_cmd_p: 0.0,
            lose_reply_p: 0.0,
            late_p: 0.0,
            late_min: Nanos::from_millis(30),
            late_max: Nanos::from_millis(120),
        }
    }
}

/// What happens to one message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fate {
    /// Arrives at this true time.
    Deliver(Nanos),
    /// Never arrives.
    Lost,
}

/// The links of one run.
pub struct Net {
    cfg: NetConfig,
    rng: SmallRng,
    drives: usize,
    /// Per link (host * drives + drive): cut until this true time.
    cut_until: Vec<Nanos>,
}

impl Net {
    /// Links between `hosts` hosts and `drives` drives.
    pub fn new(cfg: NetConfig, rng: SmallRng, hosts: usize, drives: usize) -> Net {
        Net {
            cfg,
            rng,
            drives,
            cut_until: vec![Nanos::ZERO; hosts * drives],
        }
    }

    /// The link configuration.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Cuts the link `host`–`drive` until true time `until`.
    pub fn partition(&mut self, host: usize, drive: usize, until: Nanos) {
        if let Some(c) = self.cut_until.get_mut(host * self.drives + drive) {
            *c = (*c).max(until);
        }
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.cut_until.fill(Nanos::ZERO);
    }

    /// Stops losing and delaying messages (faults are over); latency stays.
    pub fn calm(&mut self) {
        self.cfg.lose_cmd_p = 0.0;
        self.cfg.lose_reply_p = 0.0;
        self.cfg.late_p = 0.0;
        self.heal();
    }

    fn cut(&self, host: usize, drive: usize, now: Nanos) -> bool {
        self.cut_until
            .get(host * self.drives + drive)
            .is_some_and(|&u| now < u)
    }

    fn latency(&mut self) -> Nanos {
        let c = self.cfg;
        if self.rng.gen_bool(c.spike_p) {
            Nanos(
                self.rng
                    .gen_range(c.lat_max.0..=c.spike_max.0.max(c.lat_max.0)),
            )
        } else {
            Nanos(self.rng.gen_range(c.lat_min.0..=c.lat_max.0))
        }
    }

    /// The fate of a command sent now from `host` to `drive`.
    pub fn command(&mut self, host: usize, drive: usize, now: Nanos) -> Fate {
        let lat = self.latency();
        if self.cut(host, drive, now) || self.rng.gen_bool(self.cfg.lose_cmd_p) {
            return Fate::Lost;
        }
        Fate::Deliver(now + lat)
    }

    /// The fate of a reply sent now from `drive` to `host`.
    pub fn reply(&mut self, host: usize, drive: usize, now: Nanos) -> Fate {
        let mut lat = self.latency();
        if self.cut(host, drive, now) || self.rng.gen_bool(self.cfg.lose_reply_p) {
            return Fate::Lost;
        }
        if self.rng.gen_bool(self.cfg.late_p) {
            let c = self.cfg;
            lat = lat
                + Nanos(
                    self.rng
                        .gen_range(c.late_min.0..=c.late_max.0.max(c.late_min.0)),
                );
        }
        Fate::Deliver(now + lat)
    }
}

//! The login phase (RFC 7143 §6, §13): stages, status codes and operational
//! key negotiation.
//!
//! Stages: security negotiation (0) → operational negotiation (1) → full
//! feature phase (3); the initiator may skip either negotiation stage. No
//! authentication: `AuthMethod` is answered `None` (a list without `None` fails
//! the login with "authentication failure"). Digests are answered `None`.
//!
//! Negotiated keys and this target's side of them ([`Limits`]):
//!
//! | key | rule | target's value |
//! | --- | --- | --- |
//! | MaxRecvDataSegmentLength | declarative | initiator's value bounds our PDUs; we declare [`Limits::max_recv_dsl`] |
//! | MaxBurstLength, FirstBurstLength | minimum | [`Limits`] (FirstBurst ≤ MaxBurst) |
//! | InitialR2T | OR | No (so the initiator's choice wins) |
//! | ImmediateData | AND | Yes (so the initiator's choice wins) |
//! | MaxOutstandingR2T, MaxConnections | minimum | 1 |
//! | ErrorRecoveryLevel | minimum | 0 |
//! | DataPDUInOrder, DataSequenceInOrder | OR | Yes |
//! | DefaultTime2Wait / Time2Retain | max / min | 2 / 0 |
//! | IFMarker, OFMarker | AND | No |
//!
//! Unknown keys are answered `NotUnderstood`; a malformed numeric value
//! `Reject`. Login text split over several PDUs (the C bit) is collected and
//! answered once the last part arrives.

use super::pdu::{encode_text, op, parse_text, Pdu, PduError};

/// Login status class/detail (RFC 7143 §11.13.5).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Initiator error (miscellaneous).
    pub const INITIATOR_ERROR: u16 = 0x0200;
    /// Authentication failure.
    pub const AUTH_FAILURE: u16 = 0x0201;
    /// Target not found.
    pub const NOT_FOUND: u16 = 0x0203;
    /// Missing parameter.
    pub const MISSING_PARAMETER: u16 = 0x0207;
    /// Invalid request during login.
    pub const INVALID_DURING_LOGIN: u16 = 0x020B;
    /// Service unavailable (target error): sent to a connection over the limit.
    pub const SERVICE_UNAVAILABLE: u16 = 0x0301;
    /// Out of resources (target error): the login text is over
    /// [`super::Limits::max_login_text`].
    pub const OUT_OF_RESOURCES: u16 = 0x0302;
}

/// The target's limits for negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest data segment we accept (declared to the initiator).
    pub max_recv_dsl: u32,
    /// Largest burst (R2T / Data-In sequence) we accept.
    pub max_burst: u32,
    /// Largest unsolicited burst we accept.
    pub first_burst: u32,
    /// Largest login text, bytes: all the PDUs of one login request (the C bit
    /// continues it) together. More fails the login with "out of resources"
    /// before it is buffered.
    pub max_login_text: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recv_dsl: 256 * 1024,
            max_burst: 1024 * 1024,
            first_burst: 256 * 1024,
            max_login_text: 64 * 1024,
        }
    }
}

/// Operational parameters in force on a connection after login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Largest data segment we may send (the initiator's declaration; 8192 by default).
    pub send_dsl: u32,
    /// Largest data segment we accept.
    pub recv_dsl: u32,
    /// MaxBurstLength.
    pub max_burst: u32,
    /// FirstBurstLength.
    pub first_burst: u32,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
}

impl Params {
    /// The RFC defaults, with our receive limit.
    pub fn defaults(l: &Limits) -> Params {
        Params {
            send_dsl: 8192,
            recv_dsl: l.max_recv_dsl,
            max_burst: 262_144.min(l.max_burst),
            first_burst: 65_536.min(l.first_burst),
            initial_r2t: true,
            immediate_data: true,
        }
    }
}

/// Discovery or normal session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionType {
    /// SendTargets only.
    Discovery,
    /// SCSI commands to one target.
    Normal,
}

/// A login in progress on one connection.
#[derive(Debug)]
pub struct Login {
    limits: Limits,
    /// Parameters negotiated so far.
    pub params: Params,
    /// InitiatorName, once given.
    pub initiator: Option<String>,
    /// Session type, once known (Normal unless said).
    pub kind: SessionType,
    /// The target (index into the target list) of a normal session.
    pub target: Option<usize>,
    /// The TSIH this session gets.
    tsih: u16,
    declared: bool,
    tpgt_sent: bool,
    pending: Vec<u8>,
}

/// What one login request led to.
#[derive(Debug)]
pub enum Step {
    /// Send this response and keep logging in.
    Continue(Pdu),
    /// Send this response; the connection is in the full feature phase.
    Done(Pdu),
    /// Send this response and close the connection.
    Fail(Pdu),
}

fn num(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn yes(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yn(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

impl Login {
    /// A new login; `tsih` is the session handle given on success (non-zero).
    pub fn new(limits: Limits, tsih: u16) -> Login {
        Login {
            limits,
            params: Params::defaults(&limits),
            initiator: None,
            kind: SessionType::Normal,
            target: None,
            tsih: tsih.max(1),
            declared: false,
            tpgt_sent: false,
            pending: Vec::new(),
        }
    }

    /// Handles one Login Request. `targets` are the IQNs this portal serves.
    /// The response's StatSN, ExpCmdSN and MaxCmdSN are left for the caller.
    pub fn step(&mut self, req: &Pdu, targets: &[String]) -> Step {
        let mut resp = Pdu::new(op::LOGIN_RESP);
        resp.bhs[8..14].copy_from_slice(&req.bhs[8..14]); // ISID
        resp.set_itt(req.itt());
        let fail = |mut r: Pdu, code: u16| {
            r.bhs[36..38].copy_from_slice(&code.to_be_bytes());
            Step::Fail(r)
        };
        if req.opcode() != op::LOGIN_REQ {
            return fail(resp, status::INVALID_DURING_LOGIN);
        }
        let flags = req.flags();
        let transit = flags & 0x80 != 0;
        let cont = flags & 0x40 != 0;
        let csg = (flags >> 2) & 3;
        let nsg = flags & 3;
        if csg == 2 || csg == 3 || (transit && (nsg == 2 || nsg <= csg)) || (transit && cont) {
            return fail(resp, status::INITIATOR_ERROR);
        }
        if self.pending.len().saturating_add(req.data.len()) > self.limits.max_login_text {
            self.pending = Vec::new();
            return fail(resp, status::OUT_OF_RESOURCES);
        }
        self.pending.extend_from_slice(&req.data);
        if cont {
            // More text follows: acknowledge without answering yet.
            resp.set_flags(csg << 2);
            return Step::Continue(resp);
        }
        let text = std::mem::take(&mut self.pending);
        let keys = match parse_text(&text) {
            Ok(k) => k,
            Err(PduError::BadText(_)) | Err(_) => return fail(resp, status::INITIATOR_ERROR),
        };
        let mut answer: Vec<(String, String)> = Vec::new();
        for (k, v) in &keys {
            match k.as_str() {
                "InitiatorName" => self.initiator = Some(v.clone()),
                "SessionType" => {
                    self.kind = match v.as_str() {
                        "Discovery" => SessionType::Discovery,
                        "Normal" => SessionType::Normal,
                        _ => return fail(resp, status::INITIATOR_ERROR),
                    }
                }
                "TargetName" => match targets.iter().position(|t| t == v) {
                    Some(i) => self.target = Some(i),
                    None => return fail(resp, status::NOT_FOUND),
                },
                "InitiatorAlias" | "TargetAlias" => {}
                "AuthMethod" => {
                    if v.split(',').any(|m| m == "None") {
                        answer.push((k.clone(), "None".into()));
                    } else {
                        return fail(resp, status::AUTH_FAILURE);
                    }
                }
                _ => {
                    if let Some(a) = self.negotiate(k, v) {
                        answer.push((k.clone(), a));
                    }
                }
            }
        }
        if self.initiator.is_none() {
            return fail(resp, status::MISSING_PARAMETER);
        }
        if self.kind == SessionType::Normal && self.target.is_none() {
            return fail(resp, status::MISSING_PARAMETER);
        }
        if self.kind == SessionType::Normal && !self.tpgt_sent {
            answer.push(("TargetPortalGroupTag".into(), "1".into()));
            self.tpgt_sent = true;
        }
        if !self.declared && (csg == 1 || (transit && nsg == 3)) {
            answer.push((
                "MaxRecvDataSegmentLength".into(),
                self.params.recv_dsl.to_string(),
            ));
            self.declared = true;
        }
        let done = transit && nsg == 3;
        let out_flags = if transit {
            0x80 | (csg << 2) | nsg
        } else {
            csg << 2
        };
        resp.set_flags(out_flags);
        resp.data = encode_text(&answer);
        if done {
            if self.params.first_burst > self.params.max_burst {
                self.params.first_burst = self.params.max_burst;
            }
            resp.set_u16(14, self.tsih);
            Step::Done(resp)
        } else {
            Step::Continue(resp)
        }
    }

    /// The answer to one operational key (`None`: no answer is due).
    fn negotiate(&mut self, k: &str, v: &str) -> Option<String> {
        let p = &mut self.params;
        let l = &self.limits;
        let reject = || Some("Reject".to_string());
        match k {
            "HeaderDigest" | "DataDigest" => Some("None".into()),
            "MaxConnections" | "MaxOutstandingR2T" => match num(v) {
                Some(n) if n >= 1 => Some("1".into()),
                _ => reject(),
            },
            "ErrorRecoveryLevel" => num(v).map_or_else(reject, |_| Some("0".into())),
            "InitialR2T" => match yes(v) {
                Some(b) => {
                    p.initial_r2t = b;
                    Some(yn(b))
                }
                None => reject(),
            },
            "ImmediateData" => match yes(v) {
                Some(b) => {
                    p.immediate_data = b;
                    Some(yn(b))
                }
                None => reject(),
            },
            "DataPDUInOrder" | "DataSequenceInOrder" => {
                yes(v).map_or_else(reject, |_| Some("Yes".into()))
            }
            "IFMarker" | "OFMarker" => yes(v).map_or_else(reject, |_| Some("No".into())),
            "IFMarkInt" | "OFMarkInt" => Some("Irrelevant".into()),
            "MaxRecvDataSegmentLength" => match num(v) {
                Some(n) if (512..=0xFF_FFFF).contains(&n) => {
                    p.send_dsl = n as u32;
                    None
                }
                _ => reject(),
            },
            "MaxBurstLength" => match num(v) {
                Some(n) if (512..=0xFF_FFFF).contains(&n) => {
                    p.max_burst = (n as u32).min(l.max_burst);
                    Some(p.max_burst.to_string())
                }
                _ => reject(),
            },
            "FirstBurstLength" => match num(v) {
                Some(n) if (512..=0xFF_FFFF).contains(&n) => {
                    p.first_burst = (n as u32).min(l.first_burst);
                    Some(p.first_burst.to_string())
                }
                _ => reject(),
            },
            "DefaultTime2Wait" => num(v).map_or_else(reject, |n| Some(n.max(2).to_string())),
            "DefaultTime2Retain" => num(v).map_or_else(reject, |_| Some("0".into())),
            _ => Some("NotUnderstood".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(flags: u8, keys: &[(&str, &str)]) -> Pdu {
        let mut p = Pdu::new(op::LOGIN_REQ);
        p.bhs[0] |= 0x40;
        p.set_flags(flags);
        p.bhs[8..14].copy_from_slice(&[0x80, 1, 2, 3, 4, 5]);
        p.set_itt(9);
        p.data = encode_text(keys);
        p
    }

    fn text(p: &Pdu) -> Vec<(String, String)> {
        parse_text(&p.data).unwrap()
    }

    fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
        kv.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }

    fn targets() -> Vec<String> {
        vec!["iqn.t:sim0".into(), "iqn.t:sim1".into()]
    }

    #[test]
    fn security_then_operational_then_full_feature() {
        let mut l = Login::new(Limits::default(), 7);
        let r = l.step(
            &req(
                0x81, // T, CSG 0, NSG 1
                &[
                    ("InitiatorName", "iqn.i:a"),
                    ("TargetName", "iqn.t:sim1"),
                    ("SessionType", "Normal"),
                    ("AuthMethod", "CHAP,None"),
                ],
            ),
            &targets(),
        );
        let Step::Continue(r) = r else {
            panic!("{r:?}")
        };
        assert_eq!(r.flags(), 0x81);
        assert_eq!(&r.bhs[8..14], &[0x80, 1, 2, 3, 4, 5]);
        let kv = text(&r);
        assert_eq!(get(&kv, "AuthMethod"), Some("None"));
        assert_eq!(get(&kv, "TargetPortalGroupTag"), Some("1"));
        assert_eq!(l.target, Some(1));
        let r = l.step(
            &req(
                0x87, // T, CSG 1, NSG 3
                &[
                    ("HeaderDigest", "CRC32C,None"),
                    ("MaxRecvDataSegmentLength", "65536"),
                    ("MaxBurstLength", "16776192"),
                    ("FirstBurstLength", "262144"),
                    ("InitialR2T", "No"),
                    ("ImmediateData", "Yes"),
                    ("MaxOutstandingR2T", "8"),
                    ("X-com.example.Foo", "1"),
                ],
            ),
            &targets(),
        );
        let Step::Done(r) = r else { panic!("{r:?}") };
        assert_eq!(r.flags(), 0x87);
        assert_eq!(r.u16_at(14), 7);
        let kv = text(&r);
        assert_eq!(get(&kv, "HeaderDigest"), Some("None"));
        assert_eq!(get(&kv, "MaxBurstLength"), Some("1048576"));
        assert_eq!(get(&kv, "FirstBurstLength"), Some("262144"));
        assert_eq!(get(&kv, "InitialR2T"), Some("No"));
        assert_eq!(get(&kv, "MaxOutstandingR2T"), Some("1"));
        assert_eq!(get(&kv, "X-com.example.Foo"), Some("NotUnderstood"));
        assert_eq!(get(&kv, "MaxRecvDataSegmentLength"), Some("262144"));
        assert_eq!(
            get(&kv, "TargetPortalGroupTag"),
            None,
            "only in the first response"
        );
        assert_eq!(l.params.send_dsl, 65536);
        assert!(!l.params.initial_r2t);
    }

    #[test]
    fn discovery_straight_to_full_feature() {
        let mut l = Login::new(Limits::default(), 1);
        let r = l.step(
            &req(
                0x83,
                &[("InitiatorName", "iqn.i:a"), ("SessionType", "Discovery")],
            ),
            &targets(),
        );
        assert!(matches!(r, Step::Done(_)), "{r:?}");
        assert_eq!(l.kind, SessionType::Discovery);
    }

    #[test]
    fn failures_have_status_codes() {
        let code = |s: Step| match s {
            Step::Fail(p) => p.u16_at(36),
            other => panic!("{other:?}"),
        };
        let mut l = Login::new(Limits::default(), 1);
        let s = l.step(
            &req(
                0x81,
                &[("InitiatorName", "i"), ("TargetName", "iqn.t:nope")],
            ),
            &targets(),
        );
        assert_eq!(code(s), status::NOT_FOUND);
        let mut l = Login::new(Limits::default(), 1);
        let s = l.step(&req(0x81, &[("TargetName", "iqn.t:sim0")]), &targets());
        assert_eq!(code(s), status::MISSING_PARAMETER);
        let mut l = Login::new(Limits::default(), 1);
        let s = l.step(
            &req(
                0x81,
                &[
                    ("InitiatorName", "i"),
                    ("TargetName", "iqn.t:sim0"),
                    ("AuthMethod", "CHAP"),
                ],
            ),
            &targets(),
        );
        assert_eq!(code(s), status::AUTH_FAILURE);
        let mut l = Login::new(Limits::default(), 1);
        let s = l.step(&Pdu::new(op::SCSI_CMD), &targets());
        assert_eq!(code(s), status::INVALID_DURING_LOGIN);
        let mut l = Login::new(Limits::default(), 1);
        let s = l.step(&req(0x8C, &[("InitiatorName", "i")]), &targets());
        assert_eq!(code(s), status::INITIATOR_ERROR);
    }

    #[test]
    fn continued_text_is_collected() {
        let mut l = Login::new(Limits::default(), 1);
        let mut first = req(0x40, &[("InitiatorName", "iqn.i:a")]);
        first.data.extend_from_slice(b"TargetName=iqn.t:");
        let r = l.step(&first, &targets());
        let Step::Continue(r) = r else {
            panic!("{r:?}")
        };
        assert!(r.data.is_empty());
        let mut second = req(0x83, &[]);
        second.data = b"sim0\0".to_vec();
        assert!(matches!(l.step(&second, &targets()), Step::Done(_)));
        assert_eq!(l.target, Some(0));
    }

    #[test]
    fn login_text_over_the_limit_fails_before_it_is_buffered() {
        let limits = Limits {
            max_login_text: 1000,
            ..Limits::default()
        };
        let mut l = Login::new(limits, 1);
        let mut part = req(0x40, &[]);
        part.data = vec![b'a'; 400];
        for _ in 0..2 {
            assert!(matches!(l.step(&part, &targets()), Step::Continue(_)));
        }
        match l.step(&part, &targets()) {
            Step::Fail(p) => assert_eq!(p.u16_at(36), status::OUT_OF_RESOURCES),
            other => panic!("{other:?}"),
        }
        assert!(l.pending.capacity() == 0, "the text is dropped");
    }

    #[test]
    fn bad_numbers_are_rejected() {
        let mut l = Login::new(Limits::default(), 1);
        assert_eq!(l.negotiate("MaxBurstLength", "12"), Some("Reject".into()));
        assert_eq!(
            l.negotiate("MaxBurstLength", "0x10000"),
            Some("65536".into())
        );
        assert_eq!(l.negotiate("InitialR2T", "maybe"), Some("Reject".into()));
    }
}

use bytes::Bytes;
use spindle_spec::TypeName;

use super::*;
use crate::app::AppIdentity;
use crate::egress::{EgressRecord, PendingEgress};
use crate::keygroup::Layout;
use crate::message::{Address, Envelope, Value};

fn addr(id: &str) -> Address {
    Address::new(TypeName::parse("t/f").unwrap(), id)
}

fn env(to: &str, v: &str) -> Envelope {
    Envelope {
        target: addr(to),
        caller: Some(addr("caller")),
        value: Value::new("t/v", Bytes::from(v.to_string())),
        dedup: None,
    }
}

fn meta(worker: u32, workers: u32) -> PartMeta {
    PartMeta {
        application: "app".into(),
        namespace: None,
        uid: None,
        generation: 1,
        worker,
        workers,
        key_groups: 16,
    }
}

fn layout(worker: u32, workers: u32, key_groups: u32) -> Layout {
    Layout {
        worker,
        workers,
        key_groups,
    }
}

#[test]
fn a_part_round_trips_and_rescales_by_address() {
    let mut snap = Capture {
        checkpoint: 7,
        ..Capture::default()
    };
    let ids: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for id in &ids {
        snap.state
            .restore(addr(id), "n", Value::new("t/n", Bytes::from(id.clone())), Some(99));
        snap.messages.push(env(id, "m1"));
        snap.recorded.push(env(id, "m2"));
    }
    snap.specs.register(
        &TypeName::parse("t/f").unwrap(),
        [StateSpec {
            name: "n".into(),
            typename: "t/n".into(),
            expiration: Expiration::AfterWrite(std::time::Duration::from_millis(5)),
        }],
    );
    snap.delayed.push((123, env("k1", "d"), Some("tok".into())));
    snap.egress.push(PendingEgress {
        epoch: 7,
        key: "app/7/0/1".into(),
        record: EgressRecord {
            egress: TypeName::parse("t/out").unwrap(),
            value: Value::new("t/v", Bytes::from_static(b"x")),
            source: addr("k1"),
            key: None,
        },
    });
    snap.positions.insert("kafka/k/t/0".into(), 41);
    let mut other = Capture {
        checkpoint: 7,
        ..Capture::default()
    };
    other.positions.insert("kafka/k/t/0".into(), 12);
    other.positions.insert("nats/n".into(), 5);
    let merged = decode(
        &AppIdentity::named("app"),
        &[encode(&snap, &meta(0, 2)), encode(&other, &meta(1, 2))],
        layout(0, 1, 16),
    )
    .unwrap();
    assert_eq!(
        merged.positions.get("kafka/k/t/0"),
        Some(&41),
        "the highest position wins"
    );
    assert_eq!(merged.positions.get("nats/n"), Some(&5));
    let bytes = encode(&snap, &meta(0, 1));
    // Restoring with 3 workers: every address lands at exactly one, messages in order.
    let mut seen = 0;
    let mut egress = 0;
    for w in 0..3 {
        let layout = layout(w, 3, 16);
        let r = decode(&AppIdentity::named("app"), std::slice::from_ref(&bytes), layout).unwrap();
        assert_eq!(r.checkpoint, 7);
        assert_eq!(r.specs.specs(&TypeName::parse("t/f").unwrap()).len(), 1);
        for (a, _) in r.state.iter() {
            assert!(layout.owns(a));
            seen += 1;
        }
        for id in &ids {
            let mine: Vec<_> = r
                .messages
                .iter()
                .chain(&r.recorded)
                .filter(|e| *e.target.id == **id)
                .collect();
            if layout.owns(&addr(id)) {
                let vals: Vec<_> = mine.iter().map(|e| &e.value.bytes[..]).collect();
                assert_eq!(
                    vals,
                    [b"m1".as_slice(), b"m2"],
                    "snapshot messages before recorded ones"
                );
            } else {
                assert!(mine.is_empty());
            }
        }
        egress += r.egress.len();
        if layout.owns(&addr("caller")) {
            assert_eq!(r.delayed.len(), 1);
            assert_eq!(r.delayed[0].2.as_deref(), Some("tok"));
        }
    }
    assert_eq!(seen, ids.len());
    assert_eq!(egress, 1, "pending egress is restored once");
}

#[test]
fn parts_of_another_application_or_layout_are_refused() {
    let bytes = encode(&Capture::default(), &meta(0, 1));
    assert!(matches!(
        decode(
            &AppIdentity::named("other"),
            std::slice::from_ref(&bytes),
            layout(0, 1, 16)
        ),
        Err(DecodeError::OtherApplication { .. })
    ));
    assert!(matches!(
        decode(
            &AppIdentity::named("app"),
            std::slice::from_ref(&bytes),
            layout(0, 1, 8)
        ),
        Err(DecodeError::KeyGroups { .. })
    ));
    assert!(
        decode(
            &AppIdentity::named("app"),
            &[Bytes::from_static(b"\xff\xff")],
            layout(0, 1, 8)
        )
        .is_err()
    );
}

#[test]
fn a_part_of_the_same_name_in_another_namespace_is_refused() {
    let in_ns = |ns: Option<&str>, uid: Option<&str>| AppIdentity {
        namespace: ns.map(str::to_string),
        name: "app".into(),
        uid: uid.map(str::to_string),
    };
    let written = PartMeta {
        namespace: Some("team-a".into()),
        uid: Some("uid-1".into()),
        ..meta(0, 1)
    };
    let bytes = encode(&Capture::default(), &written);
    let one = std::slice::from_ref(&bytes);
    let err = decode(&in_ns(Some("team-b"), None), one, layout(0, 1, 16)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "part of checkpoint 0 belongs to application `app` in namespace `team-a`, not to this application (`app` in namespace `team-b`): refusing to restore another application's state"
    );
    assert!(
        decode(&in_ns(None, None), one, layout(0, 1, 16)).is_err(),
        "a local run's identity differs"
    );
    // The same name and namespace resume, whatever the UID (retentionPolicy: Retain).
    assert!(decode(&in_ns(Some("team-a"), Some("uid-1")), one, layout(0, 1, 16)).is_ok());
    assert!(decode(&in_ns(Some("team-a"), Some("uid-2")), one, layout(0, 1, 16)).is_ok());
    // A part written outside a namespace is not restored inside one.
    let local = encode(&Capture::default(), &meta(0, 1));
    assert!(
        decode(
            &in_ns(Some("team-a"), None),
            std::slice::from_ref(&local),
            layout(0, 1, 16)
        )
        .is_err()
    );
}

#[test]
fn any_bytes_as_a_part_decode_or_are_refused_never_a_panic() {
    use prost::Message as _;
    let mut snap = Capture {
        checkpoint: 3,
        ..Capture::default()
    };
    for id in ["a", "b", "c"] {
        snap.state
            .restore(addr(id), "n", Value::new("t/n", Bytes::from_static(b"1")), Some(5));
        snap.messages.push(env(id, "m"));
        snap.recorded.push(env(id, "r"));
    }
    snap.delayed.push((9, env("a", "d"), Some("tok".into())));
    snap.egress.push(PendingEgress {
        epoch: 3,
        key: "app/1/3/0/1".into(),
        record: EgressRecord {
            egress: TypeName::parse("t/out").unwrap(),
            value: Value::new("t/v", Bytes::from_static(b"x")),
            source: addr("a"),
            key: None,
        },
    });
    snap.positions.insert("nats/n".into(), 5);
    let valid = encode(&snap, &meta(0, 1));
    let app = AppIdentity::named("app");
    let mut rng = crate::fuzz::Rng::new(0x5eed_0003);
    let mut decoded = 0;
    for case in 0..crate::fuzz::CASES {
        let bytes = Bytes::from(if case % 4 == 0 {
            rng.bytes(400)
        } else {
            rng.mutate(&valid)
        });
        let workers = 1 + rng.below(3) as u32;
        let layout = layout(rng.below(workers as usize) as u32, workers, 16);
        if let Ok(c) = decode(&app, std::slice::from_ref(&bytes), layout) {
            decoded += 1;
            for (a, _) in c.state.iter() {
                assert!(
                    layout.owns(a),
                    "case {case}: state of {a} decoded at a worker not owning it"
                );
            }
            for m in c.messages.iter().chain(&c.recorded) {
                assert!(layout.owns(&m.target), "case {case}: message to {} misplaced", m.target);
            }
        }
    }
    // Some mutations (in values, say) still decode: the part's checksum, checked by the store
    // before decoding, is what catches those.
    assert!(decoded > 0, "no mutation decoded: the valid part is not valid");
    assert!(proto::Part::decode(valid.as_ref()).is_ok());
}

use bytes::Bytes;
use spindle_spec::TypeName;

use super::*;
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
        "app",
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
        let r = decode("app", std::slice::from_ref(&bytes), layout).unwrap();
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
        decode("other", std::slice::from_ref(&bytes), layout(0, 1, 16)),
        Err(DecodeError::OtherApplication { .. })
    ));
    assert!(matches!(
        decode("app", std::slice::from_ref(&bytes), layout(0, 1, 8)),
        Err(DecodeError::KeyGroups { .. })
    ));
    assert!(decode("app", &[Bytes::from_static(b"\xff\xff")], layout(0, 1, 8)).is_err());
}

use std::collections::BTreeMap;

use bytes::Bytes;
use spindle_spec::TypeName;

use super::*;
use crate::app::AppIdentity;
use crate::egress::{EgressRecord, PendingEgress};
use crate::keygroup::{Layout, key_group};
use crate::message::{Address, Envelope, Value};
use crate::state::{Mutation, StateStore};

const KEY_GROUPS: u32 = 16;

fn addr(id: &str) -> Address {
    Address::new(TypeName::parse("t/f").unwrap(), id)
}

fn env(to: &str, v: &str) -> Envelope {
    Envelope {
        target: addr(to),
        caller: Some(addr("caller")),
        value: Value::new("t/v", Bytes::from(v.to_string())),
        dedup: None,
        trace: None,
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
        key_groups: KEY_GROUPS,
    }
}

fn layout(worker: u32, workers: u32, key_groups: u32) -> Layout {
    Layout {
        worker,
        workers,
        key_groups,
    }
}

fn put(store: &mut StateStore, id: &str, v: &str) {
    store.apply(
        &addr(id),
        vec![Mutation {
            name: "n".into(),
            value: Some(Value::new("t/n", Bytes::from(v.to_string()))),
        }],
        &[],
        0,
    );
}

/// Applies the key-group sections of `part` that `owns` keeps, fed in chunks of `chunk`
/// bytes, to `into`.
fn apply(part: &EncodedPart, into: &mut StateStore, owns: impl Fn(u32) -> bool, chunk: usize) {
    let mut names = TypeNames::new();
    for s in &part.groups {
        if !owns(s.key_group) {
            continue;
        }
        let bytes = &part.payload[s.offset as usize..(s.offset + s.length) as usize];
        let mut d = GroupDecoder::new(into, s.key_group, s.base);
        for c in bytes.chunks(chunk.max(1)) {
            d.push(into, &mut names, c);
        }
        assert_eq!(d.finish(s.length, s.crc32).unwrap(), s.addresses);
    }
}

fn values(s: &StateStore) -> BTreeMap<String, String> {
    s.iter()
        .map(|(a, c)| {
            let v = c.iter().map(|c| String::from_utf8_lossy(c.bytes).to_string()).collect();
            (a.id.to_string(), v)
        })
        .collect()
}

#[test]
fn deltas_and_bases_rebuild_the_state_in_any_chunking() {
    let mut live = StateStore::new(KEY_GROUPS);
    live.track_changes();
    for i in 0..200 {
        put(&mut live, &format!("k{i}"), &format!("v{i}"));
    }
    let mut first = Capture::new(KEY_GROUPS);
    first.changes = live.capture(&[]);
    let p1 = encode(&first, &meta(0, 1));
    assert!(p1.groups.iter().all(|s| !s.base));
    assert_eq!(p1.base_bytes, 0);
    // Change some, delete some; then a second part with one key group whole.
    for i in 0..20 {
        put(&mut live, &format!("k{i}"), &format!("w{i}"));
    }
    for i in 20..30 {
        live.apply(
            &addr(&format!("k{i}")),
            vec![Mutation {
                name: "n".into(),
                value: None,
            }],
            &[],
            0,
        );
    }
    let whole = key_group(&addr("k150"), KEY_GROUPS);
    let mut second = Capture::new(KEY_GROUPS);
    second.changes = live.capture(&[whole]);
    let p2 = encode(&second, &meta(0, 1));
    assert!(
        p2.delta_bytes < p1.delta_bytes / 3,
        "the second part holds only what changed"
    );
    assert!(p2.groups.iter().any(|s| s.base && s.key_group == whole));
    for chunk in [1, 7, 64, 1 << 20] {
        let mut restored = StateStore::new(KEY_GROUPS);
        apply(&p1, &mut restored, |_| true, chunk);
        apply(&p2, &mut restored, |_| true, chunk);
        assert_eq!(values(&restored), values(&live), "chunks of {chunk} bytes");
    }
    // Rescaled: three workers each apply their own key groups; together, the whole state.
    let mut union = BTreeMap::new();
    for w in 0..3 {
        let l = layout(w, 3, KEY_GROUPS);
        let range = crate::keygroup::range_of(w, 3, KEY_GROUPS);
        let mut mine = StateStore::new(KEY_GROUPS);
        apply(&p1, &mut mine, |kg| range.contains(&kg), 4096);
        apply(&p2, &mut mine, |kg| range.contains(&kg), 4096);
        for (a, _) in mine.iter() {
            assert!(l.owns(&a));
        }
        union.extend(values(&mine));
    }
    assert_eq!(union, values(&live));
}

#[test]
fn a_changed_byte_is_damage_and_an_intact_section_of_another_group_is_invalid() {
    let mut live = StateStore::new(KEY_GROUPS);
    live.track_changes();
    for i in 0..50 {
        put(&mut live, &format!("k{i}"), "v");
    }
    let mut c = Capture::new(KEY_GROUPS);
    c.changes = live.capture(&[]);
    let p = encode(&c, &meta(0, 1));
    let s = &p.groups[0];
    let mut bytes = p.payload[s.offset as usize..(s.offset + s.length) as usize].to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let mut state = StateStore::new(KEY_GROUPS);
    let mut names = TypeNames::new();
    let mut d = GroupDecoder::new(&mut state, s.key_group, s.base);
    d.push(&mut state, &mut names, &bytes);
    assert!(matches!(d.finish(s.length, s.crc32), Err(SectionError::Damaged(_))));
    // Intact bytes, but read as another group's section: not damage.
    let bytes = &p.payload[s.offset as usize..(s.offset + s.length) as usize];
    let other = (s.key_group + 1) % KEY_GROUPS;
    let mut d = GroupDecoder::new(&mut state, other, s.base);
    d.push(&mut state, &mut names, bytes);
    let err = d.finish(s.length, s.crc32).unwrap_err();
    assert!(matches!(err, SectionError::Invalid(_)), "{err}");
    // Cut short.
    let mut d = GroupDecoder::new(&mut state, s.key_group, s.base);
    d.push(&mut state, &mut names, &bytes[..bytes.len() - 3]);
    assert!(matches!(d.finish(s.length, s.crc32), Err(SectionError::Damaged(_))));
}

#[test]
fn the_rest_of_a_snapshot_round_trips_and_rescales_by_address() {
    let mut snap = Capture::new(KEY_GROUPS);
    snap.checkpoint = 7;
    let ids: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for id in &ids {
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
    snap.sink_marks.insert(TypeName::parse("t/out").unwrap(), 300);
    let mut other = Capture::new(KEY_GROUPS);
    other.checkpoint = 7;
    other.positions.insert("kafka/k/t/0".into(), 12);
    other.positions.insert("nats/n".into(), 5);
    other.sink_marks.insert(TypeName::parse("t/out").unwrap(), 200);
    let rest = |c: &Capture, m: &PartMeta| {
        let p = encode(c, m);
        let index = decode_index(&p.payload[p.index.offset as usize..][..p.index.length as usize]).unwrap();
        let r = index.rest.unwrap();
        p.payload.slice(r.offset as usize..(r.offset + r.length) as usize)
    };
    let parts = [rest(&snap, &meta(0, 2)), rest(&other, &meta(1, 2))];
    let merged = decode(&AppIdentity::named("app"), &parts, layout(0, 1, KEY_GROUPS)).unwrap();
    assert_eq!(
        merged.positions.get("kafka/k/t/0"),
        Some(&41),
        "the highest position wins"
    );
    assert_eq!(merged.positions.get("nats/n"), Some(&5));
    assert_eq!(
        merged.sink_marks.get(&TypeName::parse("t/out").unwrap()),
        Some(&200),
        "the lowest mark wins"
    );
    let one = rest(&snap, &meta(0, 1));
    let mut egress = 0;
    for w in 0..3 {
        let l = layout(w, 3, KEY_GROUPS);
        let r = decode(&AppIdentity::named("app"), std::slice::from_ref(&one), l).unwrap();
        assert_eq!(r.checkpoint, 7);
        assert_eq!(r.specs.specs(&TypeName::parse("t/f").unwrap()).len(), 1);
        for id in &ids {
            let mine: Vec<_> = r
                .messages
                .iter()
                .chain(&r.recorded)
                .filter(|e| *e.target.id == **id)
                .collect();
            if l.owns(&addr(id)) {
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
        if l.owns(&addr("caller")) {
            assert_eq!(r.delayed.len(), 1);
            assert_eq!(r.delayed[0].2.as_deref(), Some("tok"));
        }
    }
    assert_eq!(egress, 1, "pending egress is restored once");
}

#[test]
fn parts_of_another_application_or_layout_are_refused() {
    let p = encode(&Capture::new(KEY_GROUPS), &meta(0, 1));
    let index = decode_index(&p.payload[p.index.offset as usize..][..p.index.length as usize]).unwrap();
    let r = index.rest.unwrap();
    let bytes = p.payload.slice(r.offset as usize..(r.offset + r.length) as usize);
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
    let rest_of = |m: &PartMeta| {
        let p = encode(&Capture::new(KEY_GROUPS), m);
        let index = decode_index(&p.payload[p.index.offset as usize..][..p.index.length as usize]).unwrap();
        let r = index.rest.unwrap();
        p.payload.slice(r.offset as usize..(r.offset + r.length) as usize)
    };
    let bytes = rest_of(&PartMeta {
        namespace: Some("team-a".into()),
        uid: Some("uid-1".into()),
        ..meta(0, 1)
    });
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
    let local = rest_of(&meta(0, 1));
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
        ..Capture::new(KEY_GROUPS)
    };
    for id in ["a", "b", "c"] {
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
    // What `decode` reads: a format-1 part, here the rest section of a format-2 one (key-group
    // sections are read by `GroupDecoder`, checked against their own CRC-32 first).
    let part = encode(&snap, &meta(0, 1));
    let index = decode_index(&part.payload[part.index.offset as usize..][..part.index.length as usize]).unwrap();
    let r = index.rest.unwrap();
    let valid = part.payload.slice(r.offset as usize..(r.offset + r.length) as usize);
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
                    layout.owns(&a),
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

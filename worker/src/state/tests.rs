use super::*;
use bytes::Bytes;

fn addr() -> Address {
    at("a")
}

fn at(id: &str) -> Address {
    Address::new(TypeName::parse("t/f").unwrap(), id)
}

fn spec(name: &str, expiration: Expiration) -> StateSpec {
    StateSpec {
        name: name.into(),
        typename: "io.statefun.types/long".into(),
        expiration,
    }
}

fn modify(name: &str, v: &'static [u8]) -> Mutation {
    Mutation {
        name: name.into(),
        value: Some(Value::new("io.statefun.types/long", Bytes::from_static(v))),
    }
}

fn present(values: &[StateValue]) -> Vec<(String, bool)> {
    values.iter().map(|v| (v.name.to_string(), v.value.is_some())).collect()
}

#[test]
fn every_spec_is_sent_and_unset_ones_have_no_value() {
    let mut store = StateStore::new(8);
    let specs = [spec("a", Expiration::Never), spec("b", Expiration::Never)];
    store.apply(&addr(), vec![modify("a", b"1")], &specs, 0);
    let values = store.values_for_invocation(&addr(), &specs, 0);
    assert_eq!(present(&values), [("a".into(), true), ("b".into(), false)]);
    assert_eq!(values[1].typename, "io.statefun.types/long");
    let delete = Mutation {
        name: "a".into(),
        value: None,
    };
    store.apply(&addr(), vec![delete], &specs, 0);
    assert_eq!(store.addresses(), 0);
}

#[test]
fn after_write_expires_regardless_of_reads() {
    let mut store = StateStore::new(8);
    let specs = [spec("a", Expiration::AfterWrite(Duration::from_millis(100)))];
    store.apply(&addr(), vec![modify("a", b"1")], &specs, 1_000);
    assert!(present(&store.values_for_invocation(&addr(), &specs, 1_050))[0].1);
    assert!(!present(&store.values_for_invocation(&addr(), &specs, 1_100))[0].1);
    assert_eq!(store.addresses(), 0, "expired values are dropped");
}

#[test]
fn after_invoke_is_refreshed_by_invocations() {
    let mut store = StateStore::new(8);
    let specs = [spec("a", Expiration::AfterInvoke(Duration::from_millis(100)))];
    store.apply(&addr(), vec![modify("a", b"1")], &specs, 1_000);
    for now in [1_050, 1_120, 1_200] {
        assert!(present(&store.values_for_invocation(&addr(), &specs, now))[0].1);
    }
    assert!(!present(&store.values_for_invocation(&addr(), &specs, 1_300))[0].1);
}

#[test]
fn registry_reports_changes() {
    let mut reg = SpecRegistry::default();
    let t = TypeName::parse("t/f").unwrap();
    assert!(reg.register(&t, [spec("a", Expiration::Never)]));
    assert!(!reg.register(&t, [spec("a", Expiration::Never)]));
    assert!(reg.register(&t, [spec("a", Expiration::AfterWrite(Duration::from_secs(1)))]));
    assert_eq!(reg.specs(&t).len(), 1);
}

/// Per key group in a capture: whether it is whole, and each address's id and value.
type Captured = Vec<(u32, bool, Vec<(String, Option<Vec<u8>>)>)>;

fn captured(c: &StateChanges) -> Captured {
    let mut out: Vec<_> = c
        .groups
        .iter()
        .map(|g| {
            let mut e: Vec<_> = g
                .entries
                .iter()
                .map(|(a, cells)| {
                    let v = cells
                        .as_ref()
                        .map(|c| c.iter().flat_map(|c| c.bytes.to_vec()).collect());
                    (a.id.to_string(), v)
                })
                .collect();
            e.sort();
            (g.key_group, g.whole, e)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_capture_holds_what_changed_since_the_last_one_and_whole_groups_on_request() {
    let mut store = StateStore::new(4);
    store.track_changes();
    let specs = [spec("a", Expiration::Never)];
    let kg = |id: &str| key_group(&at(id), 4);
    for id in ["x", "y", "z", "w"] {
        store.apply(&at(id), vec![modify("a", b"1")], &specs, 0);
    }
    let first = store.capture(&[]);
    let n: usize = first.groups.iter().map(|g| g.entries.len()).sum();
    assert_eq!(n, 4, "everything is new");
    assert!(first.groups.iter().all(|g| !g.whole));
    assert!(store.capture(&[]).groups.is_empty(), "nothing changed since");
    // One write, one delete (read and unchanged: not a change).
    store.apply(&at("x"), vec![modify("a", b"2")], &specs, 0);
    store.apply(
        &at("y"),
        vec![Mutation {
            name: "a".into(),
            value: None,
        }],
        &specs,
        0,
    );
    store.values_for_invocation(&at("z"), &specs, 0);
    let second = store.capture(&[]);
    let mut want = vec![
        (kg("x"), false, vec![("x".to_string(), Some(b"2".to_vec()))]),
        (kg("y"), false, vec![("y".to_string(), None)]),
    ];
    if kg("x") == kg("y") {
        want = vec![(
            kg("x"),
            false,
            vec![("x".into(), Some(b"2".to_vec())), ("y".into(), None)],
        )];
    }
    want.sort();
    assert_eq!(captured(&second), want);
    // A whole group: every address in it, changed or not.
    let whole = store.capture(&[kg("z")]);
    let g = &whole.groups[0];
    assert!(g.whole);
    assert!(g.entries.iter().any(|(a, c)| &*a.id == "z" && c.is_some()));
    assert_eq!(
        whole.sizes.iter().map(|(_, n)| n).sum::<usize>(),
        3,
        "sizes count every address"
    );
}

#[test]
fn a_captured_value_does_not_change_with_later_writes() {
    let mut store = StateStore::new(2);
    store.track_changes();
    let specs = [spec("a", Expiration::Never)];
    store.apply(&addr(), vec![modify("a", b"old")], &specs, 0);
    let c = store.capture(&[]);
    store.apply(&addr(), vec![modify("a", b"new")], &specs, 0);
    let cells = c.groups[0].entries[0].1.as_ref().unwrap();
    assert_eq!(cells.iter().next().unwrap().bytes, b"old");
    assert_eq!(&store.get(&addr(), "a").unwrap().bytes[..], b"new");
}

#[test]
fn the_sweep_drops_expired_values_of_addresses_nobody_invokes_and_says_so() {
    let mut store = StateStore::new(4);
    store.track_changes();
    let specs = [
        spec("ttl", Expiration::AfterWrite(Duration::from_millis(100))),
        spec("kept", Expiration::Never),
    ];
    for i in 0..20 {
        let mut m = vec![modify("ttl", b"t")];
        if i % 2 == 0 {
            m.push(modify("kept", b"k"));
        }
        store.apply(&at(&format!("a{i}")), m, &specs, 1_000);
    }
    store.capture(&[]);
    let groups = store.expiring_groups();
    assert!(!groups.is_empty());
    assert_eq!(
        groups.iter().map(|&g| store.sweep(g, 1_050)).sum::<usize>(),
        0,
        "not yet"
    );
    let removed: usize = groups.iter().map(|&g| store.sweep(g, 1_100)).sum();
    assert_eq!(removed, 20);
    assert_eq!(store.addresses(), 10, "addresses with a value left stay");
    assert!(store.expiring_groups().is_empty());
    let changes = store.capture(&[]);
    let deleted = changes
        .groups
        .iter()
        .flat_map(|g| &g.entries)
        .filter(|(_, c)| c.is_none())
        .count();
    assert_eq!(deleted, 10, "the next checkpoint deletes the addresses that are gone");
}

#[test]
fn loading_a_section_replaces_an_address_and_clearing_a_group_empties_it() {
    let mut store = StateStore::new(4);
    let a = addr();
    let kg = key_group(&a, 4);
    store.load(kg, &a, &[("n", "t/n", b"1", 0), ("m", "t/m", b"2", 5)]);
    assert_eq!(store.addresses(), 1);
    store.load(kg, &a, &[("n", "t/n", b"3", 0)]);
    assert_eq!(&store.get(&a, "n").unwrap().bytes[..], b"3");
    assert!(store.get(&a, "m").is_none());
    store.load(kg, &a, &[]);
    assert_eq!(store.addresses(), 0);
    store.load(kg, &a, &[("n", "t/n", b"1", 0)]);
    store.clear_group(kg);
    assert_eq!((store.addresses(), store.group_addresses(kg)), (0, 0));
}

#[test]
fn a_capture_takes_the_change_sets_and_leaves_no_table_behind() {
    let mut store = StateStore::new(4);
    store.track_changes();
    let specs = [spec("a", Expiration::Never)];
    for i in 0..1000 {
        store.apply(&at(&format!("k{i}")), vec![modify("a", b"1")], &specs, 0);
    }
    // A change then a delete of one address: the capture sees the delete only.
    store.apply(
        &at("k7"),
        vec![Mutation {
            name: "a".into(),
            value: None,
        }],
        &specs,
        0,
    );
    let c = store.capture(&[]);
    let entries: Vec<_> = c.groups.iter().flat_map(|g| &g.entries).collect();
    assert_eq!(entries.len(), 1000);
    assert!(entries.iter().any(|(a, cells)| &*a.id == "k7" && cells.is_none()));
    assert!(
        store.groups.iter().all(|g| g.changed.capacity() == 0),
        "the change sets went with the capture"
    );
    // The captured cells are the store's own: one allocation shared, not a copy.
    let (a, cells) = entries.iter().find(|(a, _)| &*a.id == "k8").unwrap();
    let kg = store.group_of(a);
    let held = store.entry(kg, a).unwrap();
    assert!(std::ptr::eq(
        held.id_bytes().as_ptr(),
        cells.as_ref().unwrap().entry.id_bytes().as_ptr()
    ));
}

use super::*;
use flash_core::codec::encode_payload;
use serde::Serialize;

/// Every encoding the decoder knows, as SeaORM's derive types them.
#[derive(Serialize)]
struct Row {
    a: i8,
    b: u8,
    c: i16,
    d: i64,
    e: u32,
    f: f32,
    g: f64,
    h: bool,
    i: String,
    j: Option<String>,
    k: Option<i32>,
    l: Vec<u8>,
    m: char,
    n: sea_orm::prelude::DateTimeUtc,
    o: sea_orm::prelude::Date,
    p: sea_orm::prelude::Uuid,
}

fn parts() -> Vec<String> {
    [
        "a:TinyInteger:false",
        "b:TinyUnsigned:false",
        "c:SmallInteger:false",
        "d:BigInteger:false",
        "e:Unsigned:false",
        "f:Float:false",
        "g:Double:false",
        "h:Boolean:false",
        "i:String(None):false",
        "j:Text:true",
        "k:Integer:true",
        "l:VarBinary(None):false",
        "m:Char(None):false",
        "n:TimestampWithTimeZone:false",
        "o:Date:false",
        "p:Uuid:false",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn row(id: i64) -> Row {
    Row {
        a: -3,
        b: 250,
        c: -300,
        d: id,
        e: 70_000,
        f: 1.5,
        g: -2.25,
        h: true,
        i: "héllo".into(),
        j: None,
        k: Some(-7),
        l: vec![0, 1, 255],
        m: 'ß',
        n: "2024-05-06T07:08:09Z".parse().unwrap(),
        o: "2024-05-06".parse().unwrap(),
        p: "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap(),
    }
}

#[test]
fn rows_lists_and_flags_decode_as_serde_json_shows_them() {
    let one = encode_payload(&Some(row(i64::MIN))).unwrap();
    let d = decode(CacheKind::Instance, &parts(), &one);
    assert_eq!(d.note, None, "{d:?}");
    assert_eq!(d.value, serde_json::to_value(row(i64::MIN)).unwrap());

    let none = encode_payload(&None::<Row>).unwrap();
    assert_eq!(
        decode(CacheKind::Instance, &parts(), &none).value,
        Value::Null
    );

    let list = encode_payload(&vec![row(1), row(2)]).unwrap();
    let d = decode(CacheKind::Queryset, &parts(), &list);
    assert_eq!(d.note, None);
    assert_eq!(d.value, serde_json::to_value(vec![row(1), row(2)]).unwrap());

    let flag = encode_payload(&true).unwrap();
    assert_eq!(
        decode(CacheKind::Exists, &[], &flag).value,
        Value::Bool(true)
    );
}

#[test]
fn an_unknown_type_shows_the_rest_as_hex_with_a_note() {
    #[derive(Serialize)]
    struct WithEnum {
        id: i32,
        state: u32,
        name: String,
    }
    let bytes = encode_payload(&Some(WithEnum {
        id: 5,
        state: 1,
        name: "x".into(),
    }))
    .unwrap();
    let parts = [
        "id:Integer:false",
        "state:Enum { name: Alias(\"s\"), variants: [] }:false",
        "name:Text:false",
    ]
    .map(str::to_owned);
    let d = decode(CacheKind::Instance, &parts, &bytes);
    assert_eq!(d.value, serde_json::json!({"id": 5}));
    let note = d.note.unwrap();
    assert!(
        note.contains("column state") && note.contains("does not know"),
        "{note}"
    );
    // The option tag and the id (zigzag 10) were read; the rest is shown.
    assert_eq!(d.rest_hex.as_deref(), Some(&hex(&bytes[2..])[..]));
}

#[test]
fn cut_extended_or_misread_bytes_are_notes_never_panics() {
    let bytes = encode_payload(&Some(row(9))).unwrap();
    for n in 0..bytes.len() {
        let d = decode(CacheKind::Instance, &parts(), &bytes[..n]);
        assert!(d.note.is_some(), "cut at {n}: {d:?}");
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[1, 2]);
    let d = decode(CacheKind::Instance, &parts(), &longer);
    assert_eq!(d.note.as_deref(), Some("2 bytes left after the value"));
    assert_eq!(d.rest_hex.as_deref(), Some("0102"));
    // Garbage of every kind: a note, not a panic, not a huge allocation.
    let junk = [0xff; 12];
    for kind in [CacheKind::Instance, CacheKind::Queryset, CacheKind::Exists] {
        assert!(decode(kind, &parts(), &junk).note.is_some());
    }
    assert!(decode(
        CacheKind::Instance,
        &["s:Text:false".to_owned()],
        &[1, 2, 0xc3, 0x28]
    )
    .note
    .unwrap()
    .contains("not UTF-8"));
}

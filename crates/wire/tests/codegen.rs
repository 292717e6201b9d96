//! The generator refuses schemas it cannot encode correctly, and the schema it is given is the one
//! the codecs were generated from.

#[allow(dead_code)]
#[path = "../codegen/mod.rs"]
mod codegen;

const SCHEMA: &str = include_str!("../schema/novate.xml");

fn with(body: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<sbe:messageSchema xmlns:sbe="http://fixprotocol.io/2016/sbe" package="t" id="9" version="1" byteOrder="littleEndian">
  <types>
    <composite name="messageHeader"><type name="blockLength" primitiveType="uint16"/><type name="templateId" primitiveType="uint16"/><type name="schemaId" primitiveType="uint16"/><type name="version" primitiveType="uint16"/></composite>
    <composite name="groupSizeEncoding"><type name="blockLength" primitiveType="uint16"/><type name="numInGroup" primitiveType="uint16" maxValue="10"/></composite>
    <enum name="E" encodingType="uint8"><validValue name="A">1</validValue></enum>
  </types>
  {body}
</sbe:messageSchema>"#
    )
}

#[test]
fn the_real_schema_matches_the_generated_constants() {
    let s = codegen::parse(SCHEMA).unwrap();
    assert_eq!(s.id, novate_wire::SCHEMA_ID);
    assert_eq!(s.version, novate_wire::SCHEMA_VERSION);
    assert_eq!(usize::from(s.group_entries_max), novate_wire::GROUP_ENTRIES_MAX);
    let ids: Vec<u16> = s.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, novate_wire::TEMPLATE_IDS.to_vec());
    assert!(s.messages.iter().all(|m| !m.description.is_empty()), "a description on each message");
    // Commands carry requestId first; events carry seq first.
    for m in &s.messages {
        let first = &m.block.fields.first().map(|f| f.name.as_str());
        match m.id {
            1..=8 => assert_eq!(*first, Some("requestId"), "{}", m.name),
            101..=199 => assert_eq!(*first, Some("seq"), "{}", m.name),
            _ => {}
        }
    }
    assert_eq!(codegen::ts::generate(&s), novate_wire::GENERATED_TS);
}

#[test]
fn a_minimal_schema_generates() {
    let s = codegen::parse(&with(r#"<sbe:message name="M" id="1" description="d"><field name="a" id="1" type="uint64"/><field name="e" id="2" type="E"/><field name="b" id="3" type="int32" sinceVersion="1"/></sbe:message>"#)).unwrap();
    let m = &s.messages[0];
    assert_eq!((m.block.length, m.block.min_length(0), m.block.min_length(1)), (13, 9, 13));
    assert!(codegen::rust::generate(&s).contains("pub struct MDecoder"));
}

#[test]
fn refuses_what_it_cannot_encode_correctly() {
    let bad = [
        (
            r#"<sbe:message name="M" id="1" description="d"><field name="a" id="1" type="uint64"/><field name="b" id="2" type="uint8" offset="4"/></sbe:message>"#,
            "overlaps",
        ),
        (
            r#"<sbe:message name="M" id="1" description="d"><field name="a" id="1" type="uint64" sinceVersion="2"/></sbe:message>"#,
            "sinceVersion above",
        ),
        (
            r#"<sbe:message name="M" id="1" description="d"><field name="a" id="1" type="uint64" sinceVersion="1"/><field name="b" id="2" type="uint8"/></sbe:message>"#,
            "older version after a newer",
        ),
        (
            r#"<sbe:message name="M" id="1" description="d"><field name="a" id="1" type="nope"/></sbe:message>"#,
            "unknown type",
        ),
        (
            r#"<sbe:message name="M" id="1" description="d"/><sbe:message name="N" id="1" description="d"/>"#,
            "used twice",
        ),
        (r#"<sbe:message name="M" id="1"/>"#, "description"),
        (
            r#"<sbe:message name="M" id="1" description="d"><group name="g" id="1"><field name="a" id="1" type="uint8"/></group><field name="b" id="2" type="uint8"/></sbe:message>"#,
            "before groups",
        ),
        (
            r#"<sbe:message name="M" id="1" description="d" blockLength="4"><field name="a" id="1" type="uint64"/></sbe:message>"#,
            "shorter than the fields",
        ),
    ];
    for (body, why) in bad {
        let err = codegen::parse(&with(body)).unwrap_err();
        assert!(err.contains(why), "{why}: got {err}");
    }
    let big_enum = with("").replace(
        r#"<validValue name="A">1</validValue>"#,
        r#"<validValue name="A">256</validValue>"#,
    );
    assert!(codegen::parse(&big_enum).unwrap_err().contains("does not fit"));
    let big_endian = with("").replace("littleEndian", "bigEndian");
    assert!(codegen::parse(&big_endian).is_err());
}

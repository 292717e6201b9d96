//! The novate SBE code generator: reads `schema/novate.xml` (FIX SBE 1.0) and emits the Rust
//! codecs (included by `src/lib.rs` from `OUT_DIR`) and the TypeScript codecs (`ts/src/wire/`).
//!
//! It supports the subset of SBE the schema uses, and refuses anything else with an error instead
//! of generating something wrong: little-endian byte order, the standard `messageHeader` and
//! `groupSizeEncoding` composites, simple types of integer primitives, enums encoded as unsigned
//! integers, one composite kind (`semanticType="int128"`: `lo: uint64, hi: int64`), fields and
//! non-nested repeating groups, `sinceVersion` on fields (appended at the end of their block).
//!
//! Used by `build.rs` (no access to the crate itself), so it depends only on std and roxmltree.

pub mod rust;
pub mod ts;

use std::collections::{BTreeMap, BTreeSet};

/// An integer primitive type of SBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prim {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
}

impl Prim {
    fn parse(s: &str) -> Result<Prim, String> {
        Ok(match s {
            "uint8" => Prim::U8,
            "uint16" => Prim::U16,
            "uint32" => Prim::U32,
            "uint64" => Prim::U64,
            "int8" => Prim::I8,
            "int16" => Prim::I16,
            "int32" => Prim::I32,
            "int64" => Prim::I64,
            other => return Err(format!("unsupported primitiveType {other:?}")),
        })
    }

    /// Encoded size in bytes.
    pub fn size(self) -> usize {
        match self {
            Prim::U8 | Prim::I8 => 1,
            Prim::U16 | Prim::I16 => 2,
            Prim::U32 | Prim::I32 => 4,
            Prim::U64 | Prim::I64 => 8,
        }
    }

    pub fn signed(self) -> bool {
        matches!(self, Prim::I8 | Prim::I16 | Prim::I32 | Prim::I64)
    }

    /// The largest value of an unsigned encoding.
    pub fn unsigned_max(self) -> u64 {
        match self.size() {
            8 => u64::MAX,
            n => (1u64 << (8 * n)) - 1,
        }
    }
}

/// What a field holds.
#[derive(Clone, Debug)]
pub enum Kind {
    Prim(Prim),
    /// Index into `Schema::enums`.
    Enum(usize),
    /// The `int128` composite: 16 bytes, two's complement, little-endian.
    Int128,
}

impl Kind {
    pub fn size(&self, schema: &Schema) -> usize {
        match self {
            Kind::Prim(p) => p.size(),
            Kind::Enum(i) => schema.enums[*i].encoding.size(),
            Kind::Int128 => 16,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub id: u16,
    pub kind: Kind,
    pub offset: usize,
    pub size: usize,
    pub since: u16,
    pub description: String,
}

/// A block of fields (a message's root block or a group entry).
#[derive(Clone, Debug, Default)]
pub struct Block {
    pub fields: Vec<Field>,
    /// Length of the block as this schema version encodes it.
    pub length: usize,
}

impl Block {
    /// The shortest block a sender of `version` may send: the end of the last field it knows.
    pub fn min_length(&self, version: u16) -> usize {
        self.fields
            .iter()
            .filter(|f| f.since <= version)
            .map(|f| f.offset + f.size)
            .max()
            .unwrap_or(0)
    }

    /// The distinct `sinceVersion`s above 0, ascending.
    pub fn later_versions(&self) -> Vec<u16> {
        self.fields
            .iter()
            .map(|f| f.since)
            .filter(|&v| v > 0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub id: u16,
    pub block: Block,
}

#[derive(Clone, Debug)]
pub struct Message {
    pub name: String,
    pub id: u16,
    pub description: String,
    pub block: Block,
    pub groups: Vec<Group>,
}

#[derive(Clone, Debug)]
pub struct EnumValue {
    pub name: String,
    pub value: u64,
    pub description: String,
}

#[derive(Clone, Debug)]
pub struct EnumDef {
    pub name: String,
    pub encoding: Prim,
    pub description: String,
    pub values: Vec<EnumValue>,
}

#[derive(Clone, Debug)]
pub struct Schema {
    pub package: String,
    pub id: u16,
    pub version: u16,
    pub description: String,
    /// `maxValue` of `groupSizeEncoding.numInGroup`.
    pub group_entries_max: u16,
    pub enums: Vec<EnumDef>,
    pub messages: Vec<Message>,
}

/// Simple named types of `<types>`.
enum TypeRef {
    Kind(Kind),
}

fn attr<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> Result<&'a str, String> {
    n.attribute(name).ok_or_else(|| format!("<{}> without {name:?}", n.tag_name().name()))
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("{what}: not a number: {s:?}"))
}

fn elements<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    n.children().filter(|c| c.is_element())
}

fn expect_composite(n: roxmltree::Node, want: &[(&str, &str)]) -> Result<(), String> {
    let got: Vec<(&str, &str)> = elements(n)
        .map(|t| Ok((attr(t, "name")?, attr(t, "primitiveType")?)))
        .collect::<Result<_, String>>()?;
    if got != want {
        return Err(format!("composite {:?} must be {want:?}, found {got:?}", n.attribute("name")));
    }
    Ok(())
}

/// Parse and validate a schema.
pub fn parse(xml: &str) -> Result<Schema, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "messageSchema" {
        return Err("root element must be sbe:messageSchema".into());
    }
    if root.attribute("byteOrder").unwrap_or("littleEndian") != "littleEndian" {
        return Err("only byteOrder=\"littleEndian\" is supported".into());
    }
    let mut schema = Schema {
        package: attr(root, "package")?.to_string(),
        id: num(attr(root, "id")?, "schema id")?,
        version: num(root.attribute("version").unwrap_or("0"), "schema version")?,
        description: root.attribute("description").unwrap_or("").to_string(),
        group_entries_max: 0,
        enums: Vec::new(),
        messages: Vec::new(),
    };
    let mut types: BTreeMap<String, TypeRef> = BTreeMap::new();
    for p in ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"] {
        types.insert(p.to_string(), TypeRef::Kind(Kind::Prim(Prim::parse(p)?)));
    }
    for section in elements(root).filter(|n| n.tag_name().name() == "types") {
        for t in elements(section) {
            let name = attr(t, "name")?.to_string();
            let kind = match t.tag_name().name() {
                "type" => {
                    if t.attribute("length").is_some_and(|l| l != "1")
                        || t.attribute("presence") == Some("constant")
                    {
                        return Err(format!("type {name}: arrays and constants are not supported"));
                    }
                    Kind::Prim(Prim::parse(attr(t, "primitiveType")?)?)
                }
                "enum" => {
                    let encoding = Prim::parse(attr(t, "encodingType")?)?;
                    if encoding.signed() {
                        return Err(format!("enum {name}: only unsigned encodings are supported"));
                    }
                    let mut values = Vec::new();
                    for v in elements(t) {
                        let value: u64 = num(v.text().unwrap_or(""), &format!("enum {name}"))?;
                        if value > encoding.unsigned_max() {
                            return Err(format!("enum {name}: {value} does not fit its encoding"));
                        }
                        if values.iter().any(|e: &EnumValue| e.value == value) {
                            return Err(format!("enum {name}: value {value} twice"));
                        }
                        values.push(EnumValue {
                            name: attr(v, "name")?.to_string(),
                            value,
                            description: v.attribute("description").unwrap_or("").to_string(),
                        });
                    }
                    if values.is_empty() {
                        return Err(format!("enum {name} has no values"));
                    }
                    schema.enums.push(EnumDef {
                        name: name.clone(),
                        encoding,
                        description: t.attribute("description").unwrap_or("").to_string(),
                        values,
                    });
                    Kind::Enum(schema.enums.len() - 1)
                }
                "composite" => match name.as_str() {
                    "messageHeader" => {
                        expect_composite(
                            t,
                            &[
                                ("blockLength", "uint16"),
                                ("templateId", "uint16"),
                                ("schemaId", "uint16"),
                                ("version", "uint16"),
                            ],
                        )?;
                        continue;
                    }
                    "groupSizeEncoding" => {
                        expect_composite(
                            t,
                            &[("blockLength", "uint16"), ("numInGroup", "uint16")],
                        )?;
                        let n = elements(t).nth(1).ok_or("numInGroup missing")?;
                        schema.group_entries_max =
                            num(attr(n, "maxValue")?, "numInGroup maxValue")?;
                        continue;
                    }
                    _ if t.attribute("semanticType") == Some("int128") => {
                        expect_composite(t, &[("lo", "uint64"), ("hi", "int64")])?;
                        Kind::Int128
                    }
                    _ => return Err(format!("composite {name} is not supported")),
                },
                other => return Err(format!("unsupported type element <{other}>")),
            };
            if types.insert(name.clone(), TypeRef::Kind(kind)).is_some() {
                return Err(format!("type {name} defined twice"));
            }
        }
    }
    if schema.group_entries_max == 0 {
        return Err("groupSizeEncoding with numInGroup maxValue is required".into());
    }
    let mut ids = BTreeSet::new();
    for m in elements(root).filter(|n| n.tag_name().name() == "message") {
        let name = attr(m, "name")?.to_string();
        let id: u16 = num(attr(m, "id")?, &name)?;
        if id == 0 || !ids.insert(id) {
            return Err(format!("message {name}: template id {id} is 0 or used twice"));
        }
        let description = attr(m, "description")?.to_string();
        let mut block = Block::default();
        let mut groups = Vec::new();
        for c in elements(m) {
            match c.tag_name().name() {
                "field" if groups.is_empty() => add_field(&schema, &types, &mut block, c)?,
                "field" => return Err(format!("message {name}: fields must come before groups")),
                "group" => {
                    if c.attribute("dimensionType").unwrap_or("groupSizeEncoding")
                        != "groupSizeEncoding"
                    {
                        return Err(format!("message {name}: only groupSizeEncoding is supported"));
                    }
                    let mut gb = Block::default();
                    for f in elements(c) {
                        if f.tag_name().name() != "field" {
                            return Err(format!(
                                "message {name}: nested groups and var data are not supported"
                            ));
                        }
                        add_field(&schema, &types, &mut gb, f)?;
                    }
                    finish_block(&mut gb, c.attribute("blockLength"))?;
                    groups.push(Group {
                        name: attr(c, "name")?.to_string(),
                        id: num(attr(c, "id")?, "group id")?,
                        block: gb,
                    });
                }
                other => return Err(format!("message {name}: unsupported element <{other}>")),
            }
        }
        finish_block(&mut block, m.attribute("blockLength"))?;
        schema.messages.push(Message { name, id, description, block, groups });
    }
    for m in &schema.messages {
        for f in m.block.fields.iter().chain(m.groups.iter().flat_map(|g| g.block.fields.iter())) {
            if f.since > schema.version {
                return Err(format!(
                    "{}.{}: sinceVersion above the schema version",
                    m.name, f.name
                ));
            }
        }
    }
    Ok(schema)
}

fn add_field(
    schema: &Schema,
    types: &BTreeMap<String, TypeRef>,
    block: &mut Block,
    f: roxmltree::Node,
) -> Result<(), String> {
    let name = attr(f, "name")?.to_string();
    let TypeRef::Kind(kind) =
        types.get(attr(f, "type")?).ok_or_else(|| format!("field {name}: unknown type"))?;
    let size = kind.size(schema);
    let since: u16 = num(f.attribute("sinceVersion").unwrap_or("0"), "sinceVersion")?;
    let next = block.length;
    let offset = match f.attribute("offset") {
        Some(o) => num(o, "offset")?,
        None => next,
    };
    if offset < next {
        return Err(format!("field {name}: offset {offset} overlaps the previous field"));
    }
    if block.fields.last().is_some_and(|p| p.since > since) {
        return Err(format!("field {name}: a field of an older version after a newer one"));
    }
    let id: u16 = num(attr(f, "id")?, "field id")?;
    if block.fields.iter().any(|p| p.id == id || p.name == name) {
        return Err(format!("field {name}: id or name used twice"));
    }
    block.fields.push(Field {
        name,
        id,
        kind: kind.clone(),
        offset,
        size,
        since,
        description: f.attribute("description").unwrap_or("").to_string(),
    });
    block.length = offset + size;
    Ok(())
}

fn finish_block(block: &mut Block, declared: Option<&str>) -> Result<(), String> {
    if let Some(d) = declared {
        let d: usize = num(d, "blockLength")?;
        if d < block.length {
            return Err(format!("blockLength {d} is shorter than the fields ({})", block.length));
        }
        block.length = d;
    }
    if block.length > usize::from(u16::MAX) {
        return Err("block longer than 65535 bytes".into());
    }
    Ok(())
}

/// `buyAccountId` -> `buy_account_id`.
pub fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `trades` -> `Trades`.
pub fn pascal(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

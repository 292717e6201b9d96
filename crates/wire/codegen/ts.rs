//! TypeScript emitter: DataView codecs, `bigint` for 64- and 128-bit fields, the same checks and
//! error kinds as the Rust decoders, and a dispatch table indexed by template id.

use super::{Block, Field, Kind, Message, Prim, Schema};
use std::fmt::Write;

fn ts_ty(s: &Schema, k: &Kind) -> String {
    match k {
        Kind::Prim(p) if p.size() == 8 => "bigint".into(),
        Kind::Prim(_) => "number".into(),
        Kind::Enum(i) => s.enums[*i].name.clone(),
        Kind::Int128 => "bigint".into(),
    }
}

fn getter(p: Prim) -> &'static str {
    match p {
        Prim::U8 => "getUint8",
        Prim::U16 => "getUint16",
        Prim::U32 => "getUint32",
        Prim::U64 => "getBigUint64",
        Prim::I8 => "getInt8",
        Prim::I16 => "getInt16",
        Prim::I32 => "getInt32",
        Prim::I64 => "getBigInt64",
    }
}

fn setter(p: Prim) -> &'static str {
    match p {
        Prim::U8 => "setUint8",
        Prim::U16 => "setUint16",
        Prim::U32 => "setUint32",
        Prim::U64 => "setBigUint64",
        Prim::I8 => "setInt8",
        Prim::I16 => "setInt16",
        Prim::I32 => "setInt32",
        Prim::I64 => "setBigInt64",
    }
}

fn prim_tag(p: Prim) -> &'static str {
    match p {
        Prim::U8 => "u8",
        Prim::U16 => "u16",
        Prim::U32 => "u32",
        Prim::U64 => "u64",
        Prim::I8 => "i8",
        Prim::I16 => "i16",
        Prim::I32 => "i32",
        Prim::I64 => "i64",
    }
}

fn upper(s: &str) -> String {
    super::snake(s).to_ascii_uppercase()
}

const PRELUDE: &str = r#"export const HEADER_LENGTH = 8;
export const GROUP_HEADER_LENGTH = 4;

/** Why bytes did not decode; `kind` matches the Rust `DecodeError` variant. */
export type DecodeErrorKind =
  | 'ShortBuffer'
  | 'BadBlockLength'
  | 'BadGroupBlockLength'
  | 'GroupCountOverLimit'
  | 'UnknownTemplate'
  | 'WrongTemplate'
  | 'UnsupportedSchema'
  | 'UnsupportedVersion'
  | 'BadEnumValue';

export class DecodeError extends Error {
  readonly kind: DecodeErrorKind;
  constructor(kind: DecodeErrorKind, message: string) {
    super(`${kind}: ${message}`);
    this.name = 'DecodeError';
    this.kind = kind;
  }
}

/** A value that does not fit its field, or an output buffer too short. */
export class EncodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EncodeError';
  }
}

export interface MessageHeader {
  blockLength: number;
  templateId: number;
  schemaId: number;
  version: number;
}

function viewOf(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function need(view: DataView, end: number): void {
  if (end > view.byteLength) {
    throw new DecodeError('ShortBuffer', `need ${end} bytes, have ${view.byteLength}`);
  }
}

function room(view: DataView, end: number): void {
  if (end > view.byteLength) {
    throw new EncodeError(`output buffer of ${view.byteLength} bytes, need ${end}`);
  }
}

const INT_RANGES: Record<string, [bigint, bigint]> = {
  u8: [0n, 0xffn],
  u16: [0n, 0xffffn],
  u32: [0n, 0xffffffffn],
  u64: [0n, 0xffffffffffffffffn],
  i8: [-0x80n, 0x7fn],
  i16: [-0x8000n, 0x7fffn],
  i32: [-0x80000000n, 0x7fffffffn],
  i64: [-0x8000000000000000n, 0x7fffffffffffffffn],
  i128: [-(1n << 127n), (1n << 127n) - 1n],
};

function checkInt(value: number | bigint, type: string, field: string): void {
  const wide = type === 'u64' || type === 'i64' || type === 'i128';
  if (wide !== (typeof value === 'bigint')) {
    throw new EncodeError(`${field}: a ${typeof value} given, a ${wide ? 'bigint' : 'number'} expected`);
  }
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new EncodeError(`${field}: ${value} is not an integer`);
  }
  const v = BigInt(value);
  const [lo, hi] = INT_RANGES[type];
  if (v < lo || v > hi) {
    throw new EncodeError(`${field}: ${value} does not fit ${type}`);
  }
}

function getI128(view: DataView, offset: number): bigint {
  // Most money fits in 64 bits: when the high word is the sign extension of the low one, one
  // 64-bit read makes the bigint (the general path allocates four).
  const hi0 = view.getInt32(offset + 8, true);
  const hi1 = view.getInt32(offset + 12, true);
  const negative = view.getInt32(offset + 4, true) < 0;
  if (hi0 === hi1 && hi1 === (negative ? -1 : 0)) return view.getBigInt64(offset, true);
  return (view.getBigInt64(offset + 8, true) << 64n) | view.getBigUint64(offset, true);
}

function setI128(view: DataView, offset: number, value: bigint): void {
  view.setBigUint64(offset, BigInt.asUintN(64, value), true);
  view.setBigInt64(offset + 8, BigInt.asIntN(64, value >> 64n), true);
}

/** Read the 8-byte message header at `offset`. */
export function readHeader(view: DataView, offset: number): MessageHeader {
  need(view, offset + HEADER_LENGTH);
  return {
    blockLength: view.getUint16(offset, true),
    templateId: view.getUint16(offset + 2, true),
    schemaId: view.getUint16(offset + 4, true),
    version: view.getUint16(offset + 6, true),
  };
}

function checkSchema(h: MessageHeader): void {
  checkSchemaVersion(h.schemaId, h.version);
}

function checkSchemaVersion(schemaId: number, version: number): void {
  if (schemaId !== SCHEMA_ID) {
    throw new DecodeError('UnsupportedSchema', `schema id ${schemaId}, expected ${SCHEMA_ID}`);
  }
  if (version > SCHEMA_VERSION) {
    throw new DecodeError('UnsupportedVersion', `version ${version} is newer than ${SCHEMA_VERSION}`);
  }
}

function writeHeader(view: DataView, offset: number, blockLength: number, templateId: number): void {
  view.setUint16(offset, blockLength, true);
  view.setUint16(offset + 2, templateId, true);
  view.setUint16(offset + 4, SCHEMA_ID, true);
  view.setUint16(offset + 6, SCHEMA_VERSION, true);
}

function readGroup(view: DataView, pos: number, group: string, min: number): [number, number, number] {
  need(view, pos + GROUP_HEADER_LENGTH);
  const blockLength = view.getUint16(pos, true);
  const count = view.getUint16(pos + 2, true);
  if (count > GROUP_ENTRIES_MAX) {
    throw new DecodeError('GroupCountOverLimit', `group ${group}: ${count} entries, max ${GROUP_ENTRIES_MAX}`);
  }
  const least = Math.max(min, 1);
  if (blockLength < least) {
    throw new DecodeError('BadGroupBlockLength', `group ${group}: entry length ${blockLength} below ${least}`);
  }
  need(view, pos + GROUP_HEADER_LENGTH + blockLength * count);
  return [blockLength, count, pos + GROUP_HEADER_LENGTH];
}
"#;

fn min_len_expr(b: &Block) -> String {
    let mut e = b.min_length(0).to_string();
    for v in b.later_versions() {
        e = format!("(version >= {v} ? {} : {e})", b.min_length(v));
    }
    e
}

fn read_field(s: &Schema, f: &Field, base: &str) -> String {
    let at = format!("{base} + {}", f.offset);
    match &f.kind {
        Kind::Prim(p) => {
            let little = if p.size() > 1 { ", true" } else { "" };
            format!("view.{}({at}{little})", getter(*p))
        }
        Kind::Enum(i) => {
            let p = s.enums[*i].encoding;
            let little = if p.size() > 1 { ", true" } else { "" };
            format!("view.{}({at}{little}) as {}", getter(p), s.enums[*i].name)
        }
        Kind::Int128 => format!("getI128(view, {at})"),
    }
}

fn write_field(o: &mut String, s: &Schema, f: &Field, obj: &str, base: &str, path: &str) {
    let at = format!("{base} + {}", f.offset);
    let v = if f.since > 0 {
        let zero = if ts_ty(s, &f.kind) == "bigint" { "0n" } else { "0" };
        format!("({obj}.{} ?? {zero})", f.name)
    } else {
        format!("{obj}.{}", f.name)
    };
    match &f.kind {
        Kind::Prim(p) => {
            let little = if p.size() > 1 { ", true" } else { "" };
            let _ = writeln!(o, "  checkInt({v}, '{}', `{path}{}`);", prim_tag(*p), f.name);
            let _ = writeln!(o, "  view.{}({at}, {v}{little});", setter(*p));
        }
        Kind::Enum(i) => {
            let e = &s.enums[*i];
            let little = if e.encoding.size() > 1 { ", true" } else { "" };
            let _ = writeln!(o, "  if (!{}_VALUES.has({v})) throw new EncodeError(`{path}{}: ${{{v}}} is not a {}`);", upper(&e.name), f.name, e.name);
            let _ = writeln!(o, "  view.{}({at}, {v}{little});", setter(e.encoding));
        }
        Kind::Int128 => {
            let _ = writeln!(o, "  checkInt({v}, 'i128', `{path}{}`);", f.name);
            let _ = writeln!(o, "  setI128(view, {at}, {v});");
        }
    }
}

fn interface(
    o: &mut String,
    s: &Schema,
    name: &str,
    desc: &str,
    b: &Block,
    groups: &[(String, String)],
) {
    let _ = writeln!(o, "/** {desc} */\nexport interface {name} {{");
    for f in &b.fields {
        let opt = if f.since > 0 { "?" } else { "" };
        let mut d = format!("offset {}", f.offset);
        if f.since > 0 {
            let _ = write!(
                d,
                ", since version {} (undefined when decoded from an older version)",
                f.since
            );
        }
        if !f.description.is_empty() {
            d = format!("{}; {d}", f.description);
        }
        let _ = writeln!(o, "  /** {d} */\n  {}{opt}: {};", f.name, ts_ty(s, &f.kind));
    }
    for (g, ty) in groups {
        let _ = writeln!(o, "  {g}: {ty}[];");
    }
    let _ = writeln!(o, "}}\n");
}

fn decode_fields(o: &mut String, s: &Schema, b: &Block, base: &str, indent: &str) {
    for f in &b.fields {
        if let Kind::Enum(i) = &f.kind {
            let e = &s.enums[*i];
            let cond =
                if f.since > 0 { format!("version >= {} && ", f.since) } else { String::new() };
            let raw = read_field(s, f, base);
            let _ = writeln!(o, "{indent}if ({cond}!{}_VALUES.has({raw})) {{", upper(&e.name));
            let _ = writeln!(o, "{indent}  throw new DecodeError('BadEnumValue', `field {}: ${{{raw}}} is not a valid value`);\n{indent}}}", f.name);
        }
    }
}

fn object_literal(s: &Schema, b: &Block, base: &str) -> Vec<String> {
    b.fields
        .iter()
        .map(|f| {
            let r = read_field(s, f, base);
            if f.since > 0 {
                format!("{}: version >= {} ? {r} : undefined", f.name, f.since)
            } else {
                format!("{}: {r}", f.name)
            }
        })
        .collect()
}

/// The checks and reads shared by both decoder bodies of `m` (given `view`, `offset`,
/// `blockLength` and `version`): leaves `pos` after the message and returns the fields of its
/// object literal.
fn decode_body(
    o: &mut String,
    s: &Schema,
    m: &Message,
    groups: &[(String, String)],
) -> Vec<String> {
    let _ = writeln!(o, "  const min = {};", min_len_expr(&m.block));
    let _ = writeln!(o, "  if (blockLength < min) {{\n    throw new DecodeError('BadBlockLength', `template {}: block length ${{blockLength}} below ${{min}}`);\n  }}", m.id);
    let _ =
        writeln!(o, "  const base = offset + HEADER_LENGTH;\n  need(view, base + blockLength);");
    decode_fields(o, s, &m.block, "base", "  ");
    let _ = writeln!(o, "  let pos = base + blockLength;");
    for (g, (_, ty)) in m.groups.iter().zip(groups) {
        let _ = writeln!(
            o,
            "  const [{0}Length, {0}Count, {0}Start] = readGroup(view, pos, '{0}', {1});",
            g.name,
            min_len_expr(&g.block)
        );
        let _ = writeln!(o, "  const {}: {ty}[] = [];", g.name);
        let _ = writeln!(
            o,
            "  for (let i = 0; i < {0}Count; i++) {{\n    const at = {0}Start + i * {0}Length;",
            g.name
        );
        decode_fields(o, s, &g.block, "at", "    ");
        let _ = writeln!(
            o,
            "    {}.push({{ {} }});\n  }}",
            g.name,
            object_literal(s, &g.block, "at").join(", ")
        );
        let _ = writeln!(o, "  pos = {0}Start + {0}Count * {0}Length;", g.name);
    }
    let mut fields = object_literal(s, &m.block, "base");
    fields.extend(m.groups.iter().map(|g| g.name.clone()));
    fields
}

fn message(o: &mut String, s: &Schema, m: &Message) {
    let up = upper(&m.name);
    let groups: Vec<(String, String)> = m
        .groups
        .iter()
        .map(|g| (g.name.clone(), format!("{}{}", m.name, super::pascal(&g.name))))
        .collect();
    for (g, (_, ty)) in m.groups.iter().zip(&groups) {
        interface(o, s, ty, &format!("One entry of {}.{}.", m.name, g.name), &g.block, &[]);
    }
    interface(
        o,
        s,
        &m.name,
        &format!("{} (template id {}).", m.description, m.id),
        &m.block,
        &groups,
    );
    let _ = writeln!(
        o,
        "export const {up}_TEMPLATE_ID = {};\nexport const {up}_BLOCK_LENGTH = {};\n",
        m.id, m.block.length
    );
    // Encoder.
    let _ =
        writeln!(o, "/** Encode `m` at `offset` (header included); returns the bytes written. */");
    let _ = writeln!(
        o,
        "export function encode{}(buf: Uint8Array, offset: number, m: {}): number {{",
        m.name, m.name
    );
    let _ = writeln!(o, "  const view = viewOf(buf);");
    let mut len = format!("HEADER_LENGTH + {}", m.block.length);
    for g in &m.groups {
        let _ = writeln!(o, "  if (m.{0}.length > GROUP_ENTRIES_MAX) throw new EncodeError(`group {0}: ${{m.{0}.length}} entries, max ${{GROUP_ENTRIES_MAX}}`);", g.name);
        let _ = write!(len, " + GROUP_HEADER_LENGTH + m.{}.length * {}", g.name, g.block.length);
    }
    let _ = writeln!(o, "  const end = offset + {len};\n  room(view, end);");
    let _ =
        writeln!(o, "  new Uint8Array(buf.buffer, buf.byteOffset + offset, end - offset).fill(0);");
    let _ = writeln!(
        o,
        "  writeHeader(view, offset, {}, {});\n  const base = offset + HEADER_LENGTH;",
        m.block.length, m.id
    );
    for f in &m.block.fields {
        write_field(o, s, f, "m", "base", "");
    }
    let _ = writeln!(o, "  let pos = base + {};", m.block.length);
    for g in &m.groups {
        let _ = writeln!(o, "  view.setUint16(pos, {}, true);\n  view.setUint16(pos + 2, m.{}.length, true);\n  pos += GROUP_HEADER_LENGTH;", g.block.length, g.name);
        let _ = writeln!(
            o,
            "  m.{}.forEach((e, i) => {{\n    const at = pos + i * {};",
            g.name, g.block.length
        );
        let mut inner = String::new();
        for f in &g.block.fields {
            write_field(&mut inner, s, f, "e", "at", &format!("{}[${{i}}].", g.name));
        }
        for line in inner.lines() {
            let _ = writeln!(o, "  {line}");
        }
        let _ = writeln!(o, "  }});\n  pos += m.{}.length * {};", g.name, g.block.length);
    }
    let _ = writeln!(o, "  return pos - offset;\n}}\n");
    // Decoder bodies: the message as a value, and as one object tagged with its name.
    let _ = writeln!(
        o,
        "function decode{}Body(view: DataView, offset: number, h: MessageHeader): [{}, number] {{",
        m.name, m.name
    );
    let _ = writeln!(o, "  const version = h.version;\n  const blockLength = h.blockLength;");
    let fields = decode_body(o, s, m, &groups);
    let _ = writeln!(o, "  return [{{ {} }}, pos - offset];\n}}\n", fields.join(", "));
    let _ = writeln!(
        o,
        "function tag{}(view: DataView, offset: number, blockLength: number, version: number, out: Tagged[]): number {{",
        m.name
    );
    let fields = decode_body(o, s, m, &groups);
    let _ = writeln!(
        o,
        "  out.push({{ type: '{}', {} }});\n  return pos - offset;\n}}\n",
        m.name,
        fields.join(", ")
    );
    let _ = writeln!(o, "/** Decode a {} that starts (header included) at `offset`. */", m.name);
    let _ =
        writeln!(o, "export function decode{}(buf: Uint8Array, offset = 0): {} {{", m.name, m.name);
    let _ = writeln!(
        o,
        "  const view = viewOf(buf);\n  const h = readHeader(view, offset);\n  checkSchema(h);"
    );
    let _ = writeln!(o, "  if (h.templateId !== {}) {{\n    throw new DecodeError('WrongTemplate', `template ${{h.templateId}}, expected {}`);\n  }}", m.id, m.id);
    let _ = writeln!(o, "  return decode{}Body(view, offset, h)[0];\n}}\n", m.name);
}

/// The whole generated TypeScript module.
pub fn generate(s: &Schema) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "// @generated by crates/wire/codegen from crates/wire/schema/novate.xml. Do not edit:"
    );
    let _ = writeln!(
        o,
        "// regenerate with `cargo run -p novate-wire --bin gen-ts`.\n/* eslint-disable */\n"
    );
    let _ = writeln!(
        o,
        "/** Schema id of `{}` ({}). */\nexport const SCHEMA_ID = {};",
        s.package, s.description, s.id
    );
    let _ = writeln!(o, "/** The newest message version this code knows; older versions decode too. */\nexport const SCHEMA_VERSION = {};", s.version);
    let _ = writeln!(
        o,
        "/** Most entries in one repeating group. */\nexport const GROUP_ENTRIES_MAX = {};",
        s.group_entries_max
    );
    o.push_str(PRELUDE);
    o.push('\n');
    for e in &s.enums {
        if !e.description.is_empty() {
            let _ = writeln!(o, "/** {} */", e.description);
        }
        let _ = writeln!(o, "export enum {} {{", e.name);
        for v in &e.values {
            let _ = writeln!(o, "  {} = {},", v.name, v.value);
        }
        let vals: Vec<String> = e.values.iter().map(|v| v.value.to_string()).collect();
        let _ = writeln!(
            o,
            "}}\nconst {}_VALUES: ReadonlySet<number> = new Set([{}]);\n",
            upper(&e.name),
            vals.join(", ")
        );
    }
    for m in &s.messages {
        message(&mut o, s, m);
    }
    // Message union and dispatch.
    let _ = writeln!(o, "/** Any message of the schema. */\nexport type Message =");
    for m in &s.messages {
        let _ = writeln!(o, "  | {{ template: '{0}'; value: {0} }}", m.name);
    }
    let _ = writeln!(o, ";\n\n/** The names of every template. */\nexport type TemplateName = Message['template'];\n");
    let _ = writeln!(o, "type DecodeBody = (view: DataView, offset: number, h: MessageHeader) => [Message, number];\n");
    let _ = writeln!(o, "/** The dispatch table: one slot per template id. */\nconst DISPATCH: (DecodeBody | undefined)[] = [];");
    for m in &s.messages {
        let _ = writeln!(o, "DISPATCH[{}] = (v, o, h) => {{\n  const [value, n] = decode{}Body(v, o, h);\n  return [{{ template: '{}', value }}, n];\n}};", m.id, m.name, m.name);
    }
    let _ = writeln!(o, "\n/** A message as one object: `{{ type: name, ...fields }}` ([`decodeTaggedInto`]). */\nexport type Tagged = {{\n  [K in TemplateName]: {{ type: K }} & Extract<Message, {{ template: K }}>['value'];\n}}[TemplateName];\n");
    let _ = writeln!(o, "type TagBody = (view: DataView, offset: number, blockLength: number, version: number, out: Tagged[]) => number;\n");
    let _ = writeln!(o, "/** The tagged decoders: one slot per template id. */\nconst TAGGED: (TagBody | undefined)[] = [];");
    for m in &s.messages {
        let _ = writeln!(o, "TAGGED[{}] = tag{};", m.id, m.name);
    }
    let _ = writeln!(o, "\n/**\n * Decode the message at `offset` as one tagged object pushed to `out`, with no intermediate\n * objects (the SDK's event path); returns the bytes it took. The same checks and errors, in the\n * same order, as `decodeMessageAt`.\n */");
    let _ = writeln!(o, "export function decodeTaggedInto(view: DataView, offset: number, out: Tagged[]): number {{");
    let _ = writeln!(o, "  need(view, offset + HEADER_LENGTH);\n  const blockLength = view.getUint16(offset, true);\n  const templateId = view.getUint16(offset + 2, true);\n  const version = view.getUint16(offset + 6, true);\n  checkSchemaVersion(view.getUint16(offset + 4, true), version);\n  const f = TAGGED[templateId];");
    let _ = writeln!(o, "  if (f === undefined) {{\n    throw new DecodeError('UnknownTemplate', `unknown template id ${{templateId}}`);\n  }}\n  return f(view, offset, blockLength, version, out);\n}}");
    let _ =
        writeln!(o, "\n/** Decode any message at `offset`; returns it and the bytes it took. */");
    let _ = writeln!(o, "export function decodeMessage(buf: Uint8Array, offset = 0): {{ message: Message; length: number }} {{");
    let _ = writeln!(o, "  return decodeMessageAt(viewOf(buf), offset);\n}}\n");
    let _ = writeln!(
        o,
        "/** `decodeMessage` on a `DataView` of the buffer: one view for many messages. */"
    );
    let _ = writeln!(o, "export function decodeMessageAt(view: DataView, offset: number): {{ message: Message; length: number }} {{");
    let _ = writeln!(o, "  const h = readHeader(view, offset);\n  checkSchema(h);\n  const f = DISPATCH[h.templateId];");
    let _ = writeln!(o, "  if (f === undefined) {{\n    throw new DecodeError('UnknownTemplate', `unknown template id ${{h.templateId}}`);\n  }}");
    let _ = writeln!(
        o,
        "  const [message, length] = f(view, offset, h);\n  return {{ message, length }};\n}}\n"
    );
    let _ = writeln!(o, "/** Encode any message at `offset`; returns the bytes written. */");
    let _ = writeln!(o, "export function encodeMessage(buf: Uint8Array, offset: number, msg: Message): number {{\n  switch (msg.template) {{");
    for m in &s.messages {
        let _ =
            writeln!(o, "    case '{0}':\n      return encode{0}(buf, offset, msg.value);", m.name);
    }
    let _ = writeln!(o, "  }}\n}}\n");
    let _ = writeln!(o, "/** Template id of each message name. */\nexport const TEMPLATE_IDS: Readonly<Record<TemplateName, number>> = {{");
    for m in &s.messages {
        let _ = writeln!(o, "  {}: {},", m.name, m.id);
    }
    let _ = writeln!(o, "}};");
    o
}

//! The SBE adapter: a journal record holds exactly one command message of the wire schema
//! (`novate_wire`), request id included, so the journal is the same bytes a member sent.

use crate::error::Error;
use crate::journal::Journal;
use crate::reader::Reader;
use novate_core::{Command, Nanos, Seq, StateMachine};
use novate_wire::convert::{encode_command, RequestId};

/// Room reserved for one encoded command. The largest command message (UpsertAccount) is 65
/// bytes; 128 leaves room for fields added by later schema versions.
pub const COMMAND_BYTES_MAX: usize = 128;

/// Decode a record payload into its request id and command.
pub fn decode_command(seq: Seq, payload: &[u8]) -> Result<(RequestId, Command), Error> {
    let msg = novate_wire::decode_exact(payload)
        .map_err(|e| Error::Decode { seq, what: format!("{e:?}") })?;
    msg.command().ok_or_else(|| Error::Decode { seq, what: "not a single-command message".into() })
}

impl Journal {
    /// Append `cmd` as its SBE message, encoded in place in the mapped segment.
    #[inline]
    pub fn append_command(
        &mut self,
        ts: Nanos,
        request_id: RequestId,
        cmd: &Command,
    ) -> Result<Seq, Error> {
        let mut failed = None;
        let r = self.append_with(ts, COMMAND_BYTES_MAX, |buf| {
            match encode_command(buf, request_id, cmd) {
                Ok(n) => n,
                Err(e) => {
                    failed = Some(e);
                    0
                }
            }
        });
        match (r, failed) {
            (_, Some(e)) => {
                Err(Error::Decode { seq: self.next_seq(), what: format!("encode: {e:?}") })
            }
            (r, None) => r,
        }
    }
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records applied.
    pub records: u64,
    /// Of which the state machine rejected (deterministically, as it did live).
    pub rejected: u64,
    /// Last sequence number applied (unchanged when none).
    pub last_seq: Seq,
}

/// Apply every record the reader yields to `sm`, in order. A payload that is not a command is
/// an error (the journal only ever holds commands); a rejected command is not.
pub fn replay(reader: &mut Reader, sm: &mut StateMachine) -> Result<ReplayStats, Error> {
    let mut stats = ReplayStats { last_seq: sm.last_seq(), ..ReplayStats::default() };
    while let Some(rec) = reader.next()? {
        let (_, cmd) = decode_command(rec.seq, rec.payload)?;
        if sm.apply(&cmd, rec.seq, rec.ts).is_err() {
            stats.rejected += 1;
        }
        stats.records += 1;
        stats.last_seq = rec.seq;
    }
    Ok(stats)
}

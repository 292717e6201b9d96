//! Storage selection: the journal and snapshot store a configuration asks for.

use crate::config::Config;
use crate::durability::{Journal, MemJournal, MemSnapshots, SnapshotStore};
use crate::pipeline::EngineError;

pub type Storage = (Box<dyn Journal>, Box<dyn SnapshotStore>);

/// `data_dir = ""`: memory only (a discarding journal under policy `none`).
pub fn open_storage(cfg: &Config) -> Result<Storage, EngineError> {
    match cfg.data_dir() {
        None => Ok((Box::new(MemJournal::discard()), Box::new(MemSnapshots::new()))),
        Some(dir) => Err(EngineError::Config(format!(
            "data_dir {}: file storage needs crates/journal, not wired in yet",
            dir.display()
        ))),
    }
}

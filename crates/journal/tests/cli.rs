//! The `novate-journal` CLI on a corrupt data directory: verify refuses and names the place,
//! repair truncates there (and says so), verify then passes and recover continues.

use novate_journal::*;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;

fn cli(args: &[&str]) -> (bool, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_novate-journal")).args(args).output().expect("run cli");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn verify_refuses_corruption_repair_truncates_and_recover_continues() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_str().unwrap();
    let opts = Options { policy: Policy::Fsync, segment_bytes: 1 << 20, ..Options::default() };
    {
        let mut rec = recover(t.path(), synthetic::limits(), opts).unwrap();
        for seq in 1..=1_000 {
            rec.journal.append_command(seq, seq, &synthetic::command(3, seq)).unwrap();
        }
        rec.journal.close().unwrap();
    }
    let (ok, text) = cli(&["verify", dir]);
    assert!(ok, "{text}");
    assert!(text.contains("records 1..=1000"), "{text}");

    // Flip a bit in record 500's payload.
    let (jdir, _) = data_dirs(t.path());
    let seg = scan::list_segments(&jdir).unwrap()[0].1.clone();
    let mut r = Reader::open(&jdir, 1).unwrap();
    let mut offset = format::SEGMENT_DATA_OFFSET as u64;
    while let Some(rec) = r.next().unwrap() {
        if rec.seq == 500 {
            break;
        }
        offset += format::record_bytes(rec.payload.len()) as u64;
    }
    let f = OpenOptions::new().read(true).write(true).open(&seg).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset + 40).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], offset + 40).unwrap();

    let (ok, text) = cli(&["verify", dir]);
    assert!(!ok, "verify must fail on corruption: {text}");
    assert!(
        text.contains(&seg.display().to_string()) && text.contains(&format!("offset {offset}")),
        "{text}"
    );
    let (ok, _) = cli(&["recover", dir]);
    assert!(!ok, "recover must refuse a corrupt journal");

    let (ok, text) = cli(&["repair", dir]);
    assert!(ok, "{text}");
    assert!(text.contains("Truncated") && text.contains("journal ends at record 499"), "{text}");
    let (ok, text) = cli(&["verify", dir]);
    assert!(ok && text.contains("records 1..=499"), "{text}");
    let (ok, text) = cli(&["recover", dir]);
    assert!(ok && text.contains("last_seq 499"), "{text}");
}

//! The byte ring across two real processes: this test process and `novate-shm-peer`, which maps
//! the same files and echoes every frame back.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use novate_ring::bytes::{ByteRing, ClaimError};

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        // Unique per process and per call: the tests of this binary run at the same moment.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("novate-ring-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn frame(i: u32) -> Vec<u8> {
    let len = 4 + (i as usize * 37) % 700;
    let mut f = vec![(i % 251) as u8; len];
    f[..4].copy_from_slice(&i.to_le_bytes());
    f
}

#[test]
fn frames_cross_to_another_process_and_back_in_order() {
    const COUNT: u32 = 50_000;
    let dir = TempDir::new();
    let to_peer = dir.0.join("to-peer");
    let from_peer = dir.0.join("from-peer");
    let mut out = ByteRing::create(&to_peer, 1 << 14).unwrap().into_producer();
    let mut back = ByteRing::create(&from_peer, 1 << 14).unwrap().into_consumer();

    let mut child = Command::new(env!("CARGO_BIN_EXE_novate-shm-peer"))
        .args(["echo", to_peer.to_str().unwrap(), from_peer.to_str().unwrap()])
        .arg(COUNT.to_string())
        .arg("60000")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn novate-shm-peer");

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut sent, mut received) = (0u32, 0u32);
    while received < COUNT {
        assert!(Instant::now() < deadline, "timed out: sent {sent}, received {received}");
        if sent < COUNT {
            match out.try_write(&frame(sent)) {
                Ok(()) => sent += 1,
                Err(ClaimError::Full { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        back.read(
            |f| {
                assert_eq!(f, frame(received).as_slice(), "frame {received} differs");
                received += 1;
            },
            16,
        )
        .unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success() || received == COUNT, "peer exited early: {status}");
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "peer failed: {status}");
    assert_eq!(back.read(|_| panic!("extra frame"), 16), Ok(0));
}

#[test]
fn open_rejects_a_file_that_is_not_a_ring() {
    let dir = TempDir::new();
    let path = dir.0.join("junk");
    std::fs::write(&path, vec![7u8; 4096]).unwrap();
    let err = ByteRing::open(&path).unwrap_err();
    assert!(err.to_string().contains("bad magic"), "{err}");
    assert!(ByteRing::open(&dir.0.join("missing")).is_err());
    let ring = dir.0.join("ring");
    drop(ByteRing::create(&ring, 1024).unwrap());
    assert!(ByteRing::create(&ring, 1024).is_err(), "create must not clobber an existing ring");
    assert_eq!(ByteRing::open(&ring).unwrap().capacity(), 1024);
}

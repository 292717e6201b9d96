//! SOFH stream framing (partial reads, bad headers) and datagram packets (gaps).

use novate_core::{Command, Trade};
use novate_wire::convert::encode_command;
use novate_wire::frame::*;
use novate_wire::EncodeError;

fn trade(i: u64) -> Command {
    Command::ClearTrade(Trade {
        trade_id: i,
        buy: 1,
        sell: 2,
        instrument: 3,
        qty: 4,
        price: 5,
        trade_date: 20260102,
    })
}

fn stream_of(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    for i in 1..=n {
        let len = write_frame(&mut buf, |b| encode_command(b, i, &trade(i))).unwrap();
        out.extend_from_slice(&buf[..len]);
    }
    out
}

#[test]
fn sofh_header_is_big_endian_length_including_itself_and_0x5be0() {
    let s = stream_of(1);
    assert_eq!(s.len(), 6 + 64);
    assert_eq!(&s[..6], &[0, 0, 0, 70, 0x5b, 0xe0]);
    let (payload, len) = parse_frame(&s).unwrap().unwrap();
    assert_eq!((payload.len(), len), (64, 70));
    assert_eq!(decode_frame(payload).unwrap().command(), Some((1, trade(1))));
}

/// Every way of cutting the stream into reads yields the same frames in order.
#[test]
fn partial_reads_of_every_size_yield_every_frame() {
    let s = stream_of(20);
    for chunk in [1usize, 2, 5, 6, 7, 69, 70, 71, 200, s.len()] {
        let mut dec = StreamDecoder::new();
        let mut got = Vec::new();
        for piece in s.chunks(chunk) {
            assert_eq!(dec.push(piece), piece.len());
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(decode_frame(f).unwrap().command().unwrap());
            }
        }
        assert_eq!(dec.buffered(), 0, "chunk {chunk}");
        let want: Vec<_> = (1..=20).map(|i| (i, trade(i))).collect();
        assert_eq!(got, want, "chunk {chunk}");
    }
}

#[test]
fn spare_and_commit_read_in_place() {
    let s = stream_of(3);
    let mut dec = StreamDecoder::new();
    let mut n = 0;
    for piece in s.chunks(50) {
        let spare = dec.spare();
        spare[..piece.len()].copy_from_slice(piece);
        dec.commit(piece.len());
        while let Some(f) = dec.next_frame().unwrap() {
            assert!(decode_frame(f).is_ok());
            n += 1;
        }
    }
    assert_eq!(n, 3);
    // A commit of more than the spare space is clamped, even one of usize::MAX: a fresh
    // buffer's zeros then count as data, which is a bad frame header, not a panic.
    let mut fresh = StreamDecoder::new();
    fresh.commit(usize::MAX);
    assert!(fresh.next_frame().is_err());
}

#[test]
fn a_full_buffer_compacts_and_keeps_going() {
    // Far more bytes than the buffer holds, pushed as fast as it takes them.
    let s = stream_of(3000);
    assert!(s.len() > FRAME_LEN_MAX * 2);
    let mut dec = StreamDecoder::new();
    let (mut rest, mut frames) = (&s[..], 0);
    while !rest.is_empty() {
        let n = dec.push(rest);
        rest = &rest[n..];
        while let Some(f) = dec.next_frame().unwrap() {
            assert_eq!(f.len(), 64);
            frames += 1;
        }
    }
    assert_eq!(frames, 3000);
}

#[test]
fn bad_headers_break_the_stream_with_a_reason() {
    for (bytes, want) in [
        (vec![0, 0, 0, 5, 0x5b, 0xe0], FrameError::LengthTooShort(5)),
        (vec![0, 1, 0, 1, 0x5b, 0xe0], FrameError::LengthTooLong(65537)),
        (vec![0, 0, 0, 70, 0xe0, 0x5b], FrameError::BadEncoding(0xe05b)),
    ] {
        let mut dec = StreamDecoder::new();
        dec.push(&bytes);
        assert_eq!(dec.next_frame().unwrap_err(), want);
        assert!(matches!(dec.next_frame().unwrap_err(), FrameError::Broken(_)));
    }
    // Five bytes of header: not yet an error, just incomplete.
    assert_eq!(parse_frame(&[0, 0, 0, 70, 0x5b]).unwrap(), None);
    // Frame length must match the message inside.
    let s = stream_of(1);
    let mut longer = s.clone();
    longer[3] = 71;
    longer.push(0);
    let (payload, _) = parse_frame(&longer).unwrap().unwrap();
    assert!(matches!(
        decode_frame(payload).unwrap_err(),
        FrameError::Message(novate_wire::DecodeError::BadLength { .. })
    ));
}

#[test]
fn packets_carry_frames_and_sequence_numbers() {
    let mut buf = [0u8; 2048];
    let mut w = PacketWriter::new(&mut buf, 7, 42).unwrap();
    let mut pushed = 0;
    while w.push(|b| encode_command(b, pushed + 1, &trade(pushed + 1))).is_ok() {
        pushed += 1;
    }
    // 16 + 20 * 70 = 1416 <= 1472 < 16 + 21 * 70.
    assert_eq!((pushed, w.len()), (20, 1416));
    let len = w.len();
    let p = Packet::parse(&buf[..len]).unwrap();
    assert_eq!(p.header, PacketHeader { stream_id: 7, frame_count: 20, seq: 42 });
    let cmds: Vec<_> = p.frames().map(|f| decode_frame(f).unwrap().command().unwrap()).collect();
    assert_eq!(cmds, (1..=20).map(|i| (i, trade(i))).collect::<Vec<_>>());

    assert!(matches!(Packet::parse(&buf[..len - 1]), Err(FrameError::BadPacket { .. })));
    assert!(matches!(Packet::parse(&buf[..15]), Err(FrameError::BadPacket { .. })));
    let mut extra = buf[..len + 1].to_vec();
    extra[len] = 0;
    assert!(matches!(Packet::parse(&extra), Err(FrameError::BadPacket { .. })));
    let mut reserved = buf[..len].to_vec();
    reserved[6] = 1;
    assert_eq!(Packet::parse(&reserved).unwrap_err(), FrameError::BadReserved(1));
    assert_eq!(
        PacketWriter::new(&mut [0u8; 15], 1, 1).unwrap_err(),
        EncodeError::ShortBuffer { needed: 16, len: 15 }
    );
}

#[test]
fn gap_detector_reports_missed_and_stale_packets() {
    let mut g = GapDetector::starting_at(1);
    assert_eq!(g.observe(1), SeqStatus::InOrder);
    assert_eq!(g.observe(2), SeqStatus::InOrder);
    assert_eq!(g.observe(5), SeqStatus::Gap { from: 3, to: 4 });
    assert_eq!(g.observe(4), SeqStatus::Stale);
    assert_eq!(g.observe(5), SeqStatus::Stale);
    assert_eq!(g.observe(6), SeqStatus::InOrder);
    let mut fresh = GapDetector::default();
    assert_eq!(fresh.observe(100), SeqStatus::InOrder);
    assert_eq!(fresh.observe(102), SeqStatus::Gap { from: 101, to: 101 });
    // Nothing follows the last possible packet: a replay of earlier ones stays stale.
    assert_eq!(fresh.observe(u64::MAX), SeqStatus::Gap { from: 103, to: u64::MAX - 1 });
    assert_eq!(fresh.observe(1), SeqStatus::Stale);
    assert_eq!(fresh.observe(u64::MAX), SeqStatus::Stale);
}

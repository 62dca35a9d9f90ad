//! Security matrix S16: malformed frames (random bytes, lying length prefixes, invalid UTF-8,
//! wrong types, 10 000-deep nesting) get a clean error, never a panic, and the reader never
//! allocates more than the cap for a body. These property tests try a few thousand generated
//! inputs in every `cargo test`; the libFuzzer target in `fuzz/` (`cargo xtask fuzz`, 60 s in
//! each `cargo xtask test`) searches the same decoders guided by coverage.

use proptest::prelude::*;
use quorum_sandbox_protocol::{FrameError, FromChild, ToChild, decode, read_frame};

const CAP: usize = 64 * 1024;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the bytes, decoding answers Ok or Err.
    #[test]
    fn any_bytes_decode_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode::<FromChild>(&body);
        let _ = decode::<ToChild>(&body);
    }

    /// JSON-looking input with the frames' own keys, mangled: still only Ok or Err.
    #[test]
    fn mangled_frames_decode_without_panicking(
        key in prop_oneof![Just("db_call"), Just("log"), Just("outcome"), Just("ready"), Just("db_reply"), Just("job")],
        junk in "[\\[\\]{}\":,0-9a-z\\\\ ]{0,200}",
    ) {
        let body = format!("{{\"{key}\":{junk}}}");
        let _ = decode::<FromChild>(body.as_bytes());
        let _ = decode::<ToChild>(body.as_bytes());
    }

    /// A stream with any length prefix: a body is read only when its declared length is within
    /// the cap, and never longer than the cap; a lying prefix is an error, not a hang or a panic.
    #[test]
    fn length_prefixes_are_checked_before_allocation(len in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut stream = len.to_be_bytes().to_vec();
        stream.extend_from_slice(&body);
        match read_frame(&mut &stream[..], CAP) {
            Ok(Some(read)) => {
                prop_assert!(read.len() <= CAP);
                prop_assert_eq!(read.len(), len as usize);
            }
            Ok(None) => prop_assert!(false, "a prefix was there"),
            Err(FrameError::TooLarge { len: declared, cap }) => {
                prop_assert_eq!(cap, CAP);
                prop_assert!(declared > CAP);
            }
            // The body was shorter than declared.
            Err(FrameError::Io(_)) => prop_assert!(len as usize > body.len()),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

#[test]
fn ten_thousand_deep_nesting_is_an_error_not_a_stack_overflow() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let deep = format!(
            "{{\"db_call\":{{\"id\":1,\"op\":{{\"op\":\"query\",\"sql\":\"x\",\"params\":{}{}}}}}}}",
            open.repeat(10_000),
            close.repeat(10_000)
        );
        assert!(decode::<FromChild>(deep.as_bytes()).is_err());
    }
}

#[test]
fn invalid_utf8_and_wrong_types_are_errors() {
    let mut bad = br#"{"log":{"level":"log","message":""#.to_vec();
    bad.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bad.extend_from_slice(br#"","at_ms":1}}"#);
    assert!(decode::<FromChild>(&bad).is_err());
    let wrong = br#"{"log":{"level":"log","message":42,"at_ms":"soon"}}"#;
    assert!(decode::<FromChild>(wrong).is_err());
    let negative = br#"{"log":{"level":"log","message":"x","at_ms":-1}}"#;
    assert!(decode::<FromChild>(negative).is_err());
}

/// The fuzz target's seeds (`fuzz/seeds`, first byte = the reader) are valid input for the
/// reader they name, so the fuzzer starts from frames that reach deep into each decoder. When
/// the protocol changes, this fails until the seeds are brought up to date.
#[test]
fn fuzz_seeds_are_valid_for_their_reader() -> Result<(), Box<dyn std::error::Error>> {
    use quorum_sandbox_protocol::{DbOp, guest, template::ForkRequest};

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut readers = [0usize; 4];
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let data = std::fs::read(&path)?;
        let name = path.display();
        let (&which, mut input) = data.split_first().ok_or(format!("{name} is empty"))?;
        readers[usize::from(which % 4)] += 1;
        match which % 4 {
            0 | 1 => {
                let mut frames = 0;
                while let Some(body) = read_frame(&mut input, CAP)? {
                    frames += 1;
                    if which % 4 == 1 {
                        decode::<ToChild>(&body)?;
                    } else if let FromChild::DbCall { call, .. } = decode::<FromChild>(&body)? {
                        serde_json::from_str::<DbOp>(call.get())?;
                    }
                }
                assert!(frames > 1, "{name} holds {frames} frames");
            }
            2 => {
                let call = guest::call(input.to_vec());
                let finished = guest::finished(input);
                assert!(
                    call.is_some_and(|c| serde_json::from_str::<DbOp>(c.get()).is_ok())
                        || finished.is_ok(),
                    "{name} is neither a db call nor an outcome"
                );
            }
            _ => {
                let request = input
                    .first_chunk::<{ ForkRequest::LEN }>()
                    .ok_or(format!("{name} is too short"))?;
                assert_eq!(ForkRequest::decode(*request).cpu_secs, 10);
            }
        }
    }
    assert!(
        readers.iter().all(|&n| n > 0),
        "a reader has no seed: {readers:?}"
    );
    Ok(())
}

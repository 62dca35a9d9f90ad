//! Security matrix S16: whatever a hostile child or guest sends, the decoders answer Ok or Err.
//! No panic, and no allocation beyond twice the frame cap: `cargo xtask fuzz` runs this with
//! `-malloc_limit_mb` at 2 × [`CAP`], so a reader that trusted a length prefix would be caught.
//!
//! The first byte picks the reader; the rest is its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorum_sandbox_protocol::{
    DbOp, FromChild, ToChild, decode, decode_db_rows, guest, read_frame,
    template::{ForkRequest, decode_reply},
};

/// The frame cap the readers get here (half a MiB, so twice it is libFuzzer's 1 MB unit).
const CAP: usize = 512 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    match which % 4 {
        // The executor reading a child's stdout: frames, then the db call inside a DbCall.
        0 => {
            let mut stream = input;
            while let Ok(Some(body)) = read_frame(&mut stream, CAP) {
                assert!(body.len() <= CAP, "read_frame returned more than its cap");
                if let Ok(FromChild::DbCall { call, .. }) = decode::<FromChild>(&body) {
                    let _ = serde_json::from_str::<DbOp>(call.get());
                }
            }
        }
        // A child reading the executor's frames (the executor is trusted, but a child must
        // still fail cleanly on a frame it cannot read).
        1 => {
            let mut stream = input;
            while let Ok(Some(body)) = read_frame(&mut stream, CAP) {
                // The child tries the batch layout first and falls back to serde; where serde
                // reads a body as rows, the batch reader must have read the same call and rows.
                let fast = decode_db_rows(&body);
                if let Ok(ToChild::DbRows { id, rows }) = decode::<ToChild>(&body)
                    && let Some(fast) = fast
                {
                    assert_eq!(
                        fast,
                        (id, rows.get().as_bytes()),
                        "decode_db_rows disagrees"
                    );
                }
            }
        }
        // The guest's buffers, as the host's `db_call` and `finish` imports decode them.
        2 => {
            if let Some(call) = guest::call(input.to_vec()) {
                let _ = serde_json::from_str::<DbOp>(call.get());
            }
            let _ = guest::finished(input);
        }
        // The template's fixed-size control messages.
        _ => {
            if let Some(request) = input.first_chunk::<{ ForkRequest::LEN }>() {
                let _ = ForkRequest::decode(*request);
            }
            if let Some(reply) = input.first_chunk::<4>() {
                let _ = decode_reply(*reply);
            }
        }
    }
});

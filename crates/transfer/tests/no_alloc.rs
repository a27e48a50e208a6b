//! The per-chunk paths allocate nothing: the sender reuses one buffer and the
//! receiver writes straight through. Checked with a counting allocator (its
//! own test binary, so no other test's allocations interfere).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use transfer::{parse, FileInfo, Frame, Outbound, Received, Receiver, Sender};

struct Counting;

thread_local! {
    // Const-initialized Cells: reading them never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// A global allocator can only be written with `unsafe`; this one adds a
// counter and forwards every call unchanged to the system allocator.
#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's own arguments,
// so `System`'s guarantees are passed through as they are.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout` (see above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCS.with(Cell::get))
}

#[test]
fn chunks_do_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let info = FileInfo {
        id: "na".into(),
        name: "na.bin".into(),
        size: data.len() as u64,
        mime: None,
        path: None,
    };
    let mut tx = Sender::new(&data[..], info)
        .with_chunk_size(16 * 1024)
        .unwrap();
    let mut rx = Receiver::new(dir.path());

    let start = match tx.next_message().unwrap().unwrap() {
        Outbound::Text(s) => s,
        other => panic!("{other:?}"),
    };
    let _ = rx.handle(&parse(false, start.as_bytes()).unwrap()).unwrap();

    let mut chunks = 0;
    loop {
        let (step, allocs) = counted(|| {
            let msg = tx.next_message().unwrap().unwrap();
            match msg {
                Outbound::Binary(b) => {
                    let frame = parse(true, b).unwrap();
                    assert!(matches!(
                        rx.handle(&frame).unwrap(),
                        Received::Progress { .. }
                    ));
                    None
                }
                Outbound::Text(end) => Some(end),
            }
        });
        match step {
            None => {
                chunks += 1;
                assert_eq!(allocs, 0, "chunk {chunks} allocated {allocs} times");
            }
            Some(end) => {
                let Received::Finished(f) =
                    rx.handle(&parse(false, end.as_bytes()).unwrap()).unwrap()
                else {
                    panic!()
                };
                assert!(f.ok());
                break;
            }
        }
    }
    assert_eq!(chunks, 62);
    // Sanity check that the counter counts at all.
    let (_, n) = counted(|| Frame::Text { text: "x".into() }.to_json());
    assert!(n > 0);
}
